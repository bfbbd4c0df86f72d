"""The premise server Lean's `Cloud.premiseSelector` talks to (FastAPI, in-process embedding)."""
