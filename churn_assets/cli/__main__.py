"""``python -m churn_assets.cli ...`` runs the ``churnops`` command."""

from churn_assets.cli.main import main

main()
