"""Request and response models of the HTTP fast path (pydantic): validation and the OpenAPI schemas.

``FeatureRow`` is generated from the feature declarations (``feature_store.definitions``): one required,
nullable field per feature (the value or ``null``, never left out), typed by its dtype, floats finite (no
NaN / Infinity), unknown fields rejected. The OpenAPI document is generated from these models, so a client
generated from it sends exactly what the service accepts.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic import create_model as create_pydantic_model

from churn_assets.feature_store.definitions import all_features

INT64_MAX = 2**63 - 1


def _integral_float_to_int(value: Any) -> Any:
    """JSON Schema's ``integer`` is any number with no fractional part: ``3.0`` is one (what a client
    sends when its numbers are doubles); ``3.5``, ``"3"`` and ``true`` still fail the strict int check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_AS_INT = BeforeValidator(_integral_float_to_int)
CustomerId = Annotated[StrictInt, Field(ge=0, le=INT64_MAX), _AS_INT]
Int64 = Annotated[StrictInt, Field(ge=-INT64_MAX - 1, le=INT64_MAX), _AS_INT]
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]  # JSON ints accepted (as floats); no NaN/inf


# RFC 3339 timestamps (JSON Schema's date-time: with a UTC offset), strings only (no epoch numbers).
Timestamp = Annotated[AwareDatetime, Strict()]


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """A timestamp as naive UTC (how the warehouse stores them); one whose UTC time leaves Python's range
    (year 1 or 9999) is clamped to that range."""
    try:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        return dt.datetime.min if value.year == dt.MINYEAR else dt.datetime.max


class SupportTicket(BaseModel):
    """A support ticket, as the offline pipeline's ``raw.support_tickets`` holds it."""

    model_config = ConfigDict(extra="forbid")
    opened_at: Timestamp = Field(
        description="When it was opened (with its UTC offset); counts when within the 90 days before `as_of`."
    )
    resolution_hours: FiniteFloat | None = Field(
        None, ge=0, le=24 * 90, description="Hours to resolution; null while open."
    )
    satisfaction: Annotated[StrictInt, Field(ge=1, le=5), _AS_INT] | None = Field(
        None, description="Rating 1-5 of a resolved ticket."
    )

    @field_validator("opened_at")
    @classmethod
    def _opened_at_utc(cls, value: dt.datetime) -> dt.datetime:
        return _naive_utc(value)


class CustomerContext(BaseModel):
    """Request-time events of one customer: features that depend on them are recomputed in the request."""

    model_config = ConfigDict(extra="forbid")
    customer_id: Int64
    support_tickets: list[SupportTicket] = Field(
        max_length=1000,
        description="ALL the customer's tickets opened in the 90 days before `as_of` (the ticket features are "
        "recomputed from these alone): support_tickets_last_30d, support_tickets_last_90d, "
        "unresolved_tickets_90d, avg_ticket_satisfaction_90d.",
    )


class PredictRequest(BaseModel):
    """Customer ids scored with features from the online store (and, with ``context``, request-time features)."""

    model_config = ConfigDict(extra="forbid")
    customer_ids: list[Int64] = Field(
        min_length=1, description="Customer ids, 64-bit integers (per-item errors for unknown)."
    )
    explain: StrictBool = Field(False, description="Return the top-3 SHAP reasons per customer.")
    context: list[CustomerContext] | None = Field(
        None,
        description="Request-time events per customer (entries of one customer are merged; customers not in "
        "`customer_ids` are ignored): the features they affect are computed in the request by the offline "
        "pipeline's code and named in the prediction's `live_features`.",
    )
    as_of: Timestamp | None = Field(
        None, description="Clock of the request-time features (default: the service's serving clock)."
    )

    @field_validator("as_of")
    @classmethod
    def _as_of_utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        return None if value is None else _naive_utc(value)


_PY_TYPES: dict[str, Any] = {"int64": Int64, "float64": FiniteFloat, "string": StrictStr}
FeatureRow: type[BaseModel] = create_pydantic_model(  # type: ignore[call-overload]
    "FeatureRow",
    __config__=ConfigDict(extra="forbid"),
    customer_id=(CustomerId | None, Field(None, description="Optional: logged, rate limited, routed.")),
    **{
        f.name: (_PY_TYPES[f.dtype] | None, Field(description=f"{f.description} (required; null = missing)"))
        for f in all_features()
    },
)


class PredictFeaturesRequest(BaseModel):
    """Explicit feature rows (validated against the feature declarations); no feature store involved."""

    model_config = ConfigDict(extra="forbid")
    rows: list[FeatureRow] = Field(min_length=1)  # type: ignore[valid-type]
    explain: StrictBool = False


class Reason(BaseModel):
    feature: str
    contribution: float = Field(description="SHAP contribution (log-odds).")


class Prediction(BaseModel):
    """One scored customer (or feature row)."""

    customer_id: int | None
    probability: float = Field(ge=0, le=1, description="Churn probability.")
    label: int = Field(description="1 when probability >= threshold.")
    threshold: float
    model_name: str
    model_version: str
    variant: str = Field(description="champion or canary.")
    reasons: list[Reason] | None = Field(None, description="Top SHAP reasons when `explain` was asked.")
    live_features: list[str] | None = Field(
        None,
        description="Features computed in the request from the request's `context` (else from the store).",
    )


class ItemError(BaseModel):
    """An item that could not be scored (e.g. unknown customer id); the rest of the batch is."""

    customer_id: int | None
    error: str


class PredictResponse(BaseModel):
    predictions: list[Prediction | ItemError] = Field(description="One item per requested id/row, in order.")


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, naming the field and rule where there is one.")
    detail: list[dict[str, str]] | None = Field(None, description="422: field, rule, message per error.")
    stage: str | None = Field(None, description="504: what the request was doing at the deadline.")


class RolloutResponse(BaseModel):
    """``GET /rollout``: the rollout as this worker sees it."""

    phase: str
    stable_version: str | None
    candidate_version: str | None
    loaded_versions: list[str]
    breaker: str = Field(description="Feature-store breaker of this worker: closed, half-open or open.")
