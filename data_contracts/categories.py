"""Allowed values of the categorical raw columns: the contract is their source of truth."""

PLAN_TYPES = ("basic", "standard", "premium", "unlimited")
CONTRACT_TYPES = ("month_to_month", "one_year", "two_year")
PAYMENT_METHODS = ("credit_card", "bank_transfer", "electronic_check", "mailed_check")
ACQUISITION_CHANNELS = ("online", "retail", "telesales", "partner", "campaign")
REGIONS = ("north", "south", "east", "west", "central")
SEGMENTS = ("consumer", "business")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
TICKET_CATEGORIES = ("billing", "network", "device", "plan_change", "other")
TICKET_PRIORITIES = ("low", "medium", "high")
CHURN_REASONS = ("price", "service_quality", "competitor", "moved", "other")
N_PRODUCT_FEATURES = 20
