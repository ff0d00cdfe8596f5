"""Deployment on Kubernetes: the manifests under ``deploy/`` rendered from the settings, and the container
builds behind ``make container`` (docs/scale_out.md)."""
