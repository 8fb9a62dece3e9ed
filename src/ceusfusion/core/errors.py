"""User-facing errors: one clear line, never a traceback.

The CLI catches :class:`CeusError` and prints ``error: <message>``; every stage
raises it (or :class:`CaseError` for one case) for problems with the user's
input, so that messages name the case, the file and the problem.
"""

from __future__ import annotations


class CeusError(Exception):
    """A problem with the user's input or configuration, shown as one line."""


class CaseError(CeusError):
    """A problem with one case: names the case, the file and what is wrong."""

    def __init__(self, case_id: str, file: str | None, problem: str):
        self.case_id = case_id
        self.file = file
        self.problem = problem
        where = f" ({file})" if file else ""
        super().__init__(f"case {case_id}{where}: {problem}")
