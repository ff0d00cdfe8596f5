"""Where heavy stages run: the local engine (this process) or a Dask cluster, sharded by customer."""
