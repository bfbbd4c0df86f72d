"""The /retrieve request body as Lean's `Cloud.premiseSelector` sends it (strict types: no coercion), with
the server's limits on counts and lengths written into the model, so that its published JSON schema states
them and pydantic refuses an oversized field before any work is done on the request. Every list stops at its
first bad entry (`fail_fast`): a body that breaks the schema everywhere costs no more to refuse than a valid
body of its size costs to read, and its 422 names the first errors only (issue 28)."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model


def request_model(config) -> type[BaseModel]:
    """The request model of a server configured by `config` (a ServeConfig)."""
    return _request_model(config.max_states, config.max_state_chars, config.max_decl_chars,
                          config.max_list_entries, config.max_name_chars)


@functools.lru_cache(maxsize=8)
def _request_model(states: int, state_chars: int, decl_chars: int, entries: int, name_chars: int
                   ) -> type[BaseModel]:
    """One model per set of limits (a handful per process: a test suite's configs)."""
    name = Annotated[StrictStr, Field(max_length=name_chars)]
    state = Annotated[StrictStr, Field(max_length=state_chars)]
    ids = Annotated[list[StrictInt | name], Field(max_length=entries, fail_fast=True)]
    extra = ConfigDict(extra="ignore")
    new_premise = create_model(
        "NewPremise", __config__=extra,
        name=(name, ...),
        decl=(Annotated[StrictStr, Field(max_length=decl_chars, description=(
            "the declaration as Lean pretty-prints it (`theorem foo (a : Nat) : ...`); this text is embedded"))],
              ...),
    )
    return create_model(
        "RetrieveRequest", __config__=extra,
        state=(state | Annotated[list[state], Field(max_length=states, fail_fast=True)], ...),
        local_premises=(ids | None, None),
        imported_modules=(ids | None, None),
        new_premises=(Annotated[list[new_premise], Field(max_length=entries, fail_fast=True)] | None, None),
        k=(StrictInt, ...),
        caller_in_module_system=(StrictBool | None, False),
        imported_all_modules=(ids | None, None),
    )
