"""The code vocabulary: a code, a set of codes, normalisation, and the named code lists of the
rule data (exact codes and prefix families: ICD-10-CM "R07*" = R07.x)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Code:
    """A (system, code) pair; `system` is the short name from the rule data's alias table."""

    system: str
    code: str

    def __str__(self) -> str:
        return f"{self.system}|{self.code}"

    @classmethod
    def parse(cls, text: str) -> Code:
        """ "cpt|75580" as written in the rule data (validated when it loads)."""
        system, _, code = text.partition("|")
        return cls(system, code)


CodeSet = frozenset[Code]


def normalise_code(system: str, code: str) -> str:
    """ICD-10-CM is written with or without its dot ("R07.9" / "R079"): compare without it."""
    code = code.strip()
    if system == "icd10cm":
        return code.replace(".", "").upper()
    if system in {"cpt", "hcpcs", "icd10pcs"}:
        return code.upper()
    return code


@dataclass(frozen=True)
class CodeList:
    """A named list of codes. Entries ending in '*' match every code that starts with them."""

    name: str
    exact: frozenset[Code]
    prefixes: frozenset[Code]

    @classmethod
    def parse(cls, name: str, entries: Iterable[str]) -> CodeList:
        exact: set[Code] = set()
        prefixes: set[Code] = set()
        for entry in entries:
            system, sep, code = entry.partition("|")
            if not sep or not system or not code:
                raise ValueError(f"code list {name!r}: {entry!r} is not 'system|code'")
            if code.endswith("*"):
                prefixes.add(Code(system, normalise_code(system, code[:-1])))
            else:
                exact.add(Code(system, normalise_code(system, code)))
        return cls(name, frozenset(exact), frozenset(prefixes))

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, Code):
            return False
        if code in self.exact:
            return True
        return any(p.system == code.system and code.code.startswith(p.code) for p in self.prefixes)

    def matches(self, codes: Iterable[Code]) -> list[Code]:
        """The codes (in input order) that belong to this list."""
        return [c for c in codes if c in self]

    def any_in(self, codes: Iterable[Code]) -> bool:
        return any(c in self for c in codes)

    @property
    def systems(self) -> frozenset[str]:
        return frozenset(c.system for c in self.exact | self.prefixes)
