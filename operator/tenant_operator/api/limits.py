"""What bounds a tenant in the database: per plan (`spec.database.limits`), per tenant (`spec.databaseOverrides`).

Applied to the tenant's role: CONNECTION LIMIT, and the rest as `ALTER ROLE ...
SET` defaults that every session of the role starts with. What the tenant's own
session can undo, and what it cannot: temp_file_limit is a superuser setting, so
it holds; statement_timeout, idle_in_transaction_session_timeout, lock_timeout
and work_mem are defaults a session may SET otherwise (PostgreSQL has no way to
forbid that to a role), so they bound the tenant's applications as configured,
not a tenant that sets out to escape them. CONNECTION LIMIT holds.
"""

from __future__ import annotations

from kubernetes.utils.quantity import parse_quantity
from pydantic import ConfigDict, Field, model_validator

from tenant_operator.api.fields import WHOLE_BINARY, Quantity, SpecModel, _matching, _whole, cel, validations

DURATION_PATTERN = r"^[0-9]{1,9}([.][0-9]{1,3})?(us|ms|s|min|h|d)?$"
DURATION_MESSAGE = ("must be a number with a PostgreSQL time unit (us, ms, s, min, h or d; none means "
                    "milliseconds), such as 30s, 1.5s or 500ms; 0 turns the limit off")
SIZE_PATTERN = r"^[0-9]{1,9}(B|kB|MB|GB|TB)?$"
SIZE_MESSAGE = ("must be a whole number with a PostgreSQL memory unit (B, kB, MB, GB or TB; none means kB), "
                "such as 64MB")

Duration = _matching(DURATION_PATTERN, DURATION_MESSAGE, 16)
Size = _matching(SIZE_PATTERN, SIZE_MESSAGE, 16)

# maxSize is bytes: `500m` is half a byte and would stop every tenant of the plan, so whole bytes from
# 1Mi up (a tenant's empty schema and catalogs take kilobytes already). CEL's isInteger() is false for
# binary suffixes, so a whole number before one counts as whole (fields.py says the same for quotas).
MIN_MAX_SIZE = "1Mi"
MAX_SIZE_MESSAGE = "maxSize must be a whole number of bytes, at least 1Mi, such as 500Mi or 10Gi"
_CEL_MAX_SIZE = (
    "!has(self.maxSize) || (type(self.maxSize) == int ? self.maxSize >= 1048576"
    " : (!isQuantity(self.maxSize) || (quantity(self.maxSize).compareTo(quantity('1Mi')) >= 0"
    f" && (quantity(self.maxSize).isInteger() || self.maxSize.matches('{WHOLE_BINARY}')"
    " || quantity(self.maxSize).compareTo(quantity('1E')) >= 0))))"
)

DEFAULT_CONNECTION_LIMIT = 20
"""Without a plan's connectionLimit: a tenant must not be able to exhaust the server's max_connections."""

# The role settings the operator owns (field -> PostgreSQL parameter): set when asked, reset when not.
ROLE_SETTINGS = {
    "statement_timeout": "statement_timeout",
    "idle_in_transaction_session_timeout": "idle_in_transaction_session_timeout",
    "lock_timeout": "lock_timeout",
    "work_mem": "work_mem",
    "temp_file_limit": "temp_file_limit",
}


class DatabaseLimits(SpecModel):
    """Limits of each tenant's database role; a value left out is PostgreSQL's default (connectionLimit: 20)."""

    model_config = ConfigDict(json_schema_extra=validations(
        {**cel(_CEL_MAX_SIZE, MAX_SIZE_MESSAGE), "fieldPath": ".maxSize", "reason": "FieldValueInvalid"}))

    connection_limit: int | None = Field(default=None, ge=1, le=10000,
                                         description="Sessions the tenant's role may hold at once.")
    statement_timeout: Duration | None = Field(  # type: ignore[valid-type]
        default=None, description="A statement running longer is cancelled, such as 30s.")
    idle_in_transaction_session_timeout: Duration | None = Field(  # type: ignore[valid-type]
        default=None, description="A session idle inside a transaction this long is ended, such as 5min.")
    lock_timeout: Duration | None = Field(  # type: ignore[valid-type]
        default=None, description="A statement waiting this long for a lock is cancelled, such as 10s.")
    work_mem: Size | None = Field(  # type: ignore[valid-type]
        default=None, description="Memory a sort or hash may use before spilling to disk, such as 16MB.")
    temp_file_limit: Size | None = Field(  # type: ignore[valid-type]
        default=None, description="Temporary file space a session may use, such as 1GB (the tenant cannot raise it).")
    max_size: Quantity | None = Field(
        default=None, description="Bytes the tenant's data may take, such as 10Gi; over it, its writes stop "
                                  "(reads go on) until it is back under (condition StorageExceeded).")


    @model_validator(mode="after")
    def _whole_bytes_from_one_mebibyte(self) -> DatabaseLimits:
        if self.max_size is not None and (parse_quantity(self.max_size) < parse_quantity(MIN_MAX_SIZE)
                                          or not _whole(self.max_size)):
            raise ValueError(MAX_SIZE_MESSAGE)
        return self


def effective(plan: DatabaseLimits, overrides: DatabaseLimits) -> DatabaseLimits:
    """The plan's limits with the tenant's overrides (each value set there wins)."""
    return plan.model_copy(update=overrides.model_dump(exclude_none=True))


def connection_limit(limits: DatabaseLimits) -> int:
    return limits.connection_limit or DEFAULT_CONNECTION_LIMIT


def max_bytes(limits: DatabaseLimits) -> int | None:
    return int(parse_quantity(limits.max_size)) if limits.max_size is not None else None


def role_settings(limits: DatabaseLimits) -> dict[str, str]:
    """PostgreSQL parameter -> value for `ALTER ROLE ... SET`, only those the limits set."""
    values = limits.model_dump()
    return {parameter: values[field] for field, parameter in ROLE_SETTINGS.items() if values[field] is not None}
