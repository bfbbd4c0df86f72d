"""The body Lean's default premise-selection client sends (v4.33, `PremiseSelection/Cloud.lean`,
`selectPremises` with `premiseSelection.indexByIndividualPremise` false), rebuilt step by step from the
client's code and not from evaluation's simulation (eval/rerank/requests.py), so a replay test compares
the two.

The client asks the server for `/indexed-modules` once; walks the modules its environment imports: an
indexed one is sent by its position, an unindexed one contributes each of its constants as a new premise;
keeps the last `maxUnindexedPremises` of those; appends every constant of its own file elaborated so far
(indexed or not: with the option false it never asks which premises are indexed); keeps the last
`maxUnindexedPremises` of all; sends `local_premises` empty.
"""

from __future__ import annotations

MAX_UNINDEXED_PREMISES = 2048
"""The option premiseSelection.maxUnindexedPremises's default."""


def default_client_body(state: str, imported: list[str], indexed_modules: list[str], constants_of,
                        own_constants: list[tuple[str, str]], k: int,
                        max_unindexed: int = MAX_UNINDEXED_PREMISES) -> dict:
    """The JSON body for goal `state`. `imported`: the environment's imported modules (header order);
    `indexed_modules`: the server's /indexed-modules; `constants_of(module)`: (name, declaration) of a
    module's constants; `own_constants`: those of the file itself, in its environment's map order."""
    position = {name: i for i, name in enumerate(indexed_modules)}
    module_positions: list[int] = []
    unindexed: list[tuple[str, str]] = []
    for module in imported:
        if module in position:
            module_positions.append(position[module])
        else:
            unindexed.extend(constants_of(module))
    unindexed = unindexed[max(len(unindexed) - max_unindexed, 0):]
    premises = unindexed + list(own_constants)
    premises = premises[max(len(premises) - max_unindexed, 0):]
    return {"state": state, "local_premises": [], "imported_modules": module_positions,
            "new_premises": [{"name": name, "decl": decl} for name, decl in premises], "k": k}
