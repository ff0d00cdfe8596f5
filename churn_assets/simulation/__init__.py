"""The seeded, vectorised simulator of the telecom business that feeds the landing zone.

See docs/simulation.md for the generative model and the production scenario.
"""

from churn_assets.simulation.churn_model import ChurnModel
from churn_assets.simulation.scenario import Scenario
from churn_assets.simulation.world import World, advance, simulate_history

__all__ = ["ChurnModel", "Scenario", "World", "advance", "simulate_history"]
