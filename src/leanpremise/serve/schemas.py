"""The /retrieve request body as Lean's `Cloud.premiseSelector` sends it (strict types: no coercion)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr


class NewPremise(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    decl: StrictStr
    """The declaration as Lean pretty-prints it (`theorem foo (a : Nat) : ...`); this text is embedded."""


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    state: StrictStr | list[StrictStr]
    local_premises: list[StrictInt | StrictStr] | None = None
    imported_modules: list[StrictInt | StrictStr] | None = None
    new_premises: list[NewPremise] | None = None
    k: StrictInt
    caller_in_module_system: StrictBool | None = False
    imported_all_modules: list[StrictInt | StrictStr] | None = None
