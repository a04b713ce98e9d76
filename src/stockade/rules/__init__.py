"""The rule language every engine shares: conditions compiled to Python (conditions.py), paths (paths.py), lists
inline or backed by data files (lists.py), rule files with errors at file:line, macros, exceptions and packs
(loader.py), MITRE and framework tags (tags.py), the index of rules by event kind (index.py), and what audit
and sensor detectors share about alerts (alerts.py). posture/, admission/, audit/ and sensor/ build on it; it
imports none of them."""

from stockade.rules.alerts import PLACEHOLDER, AlertDeltas, Bursts, reads_of, render
from stockade.rules.conditions import LIST_OPS, OPS, check_condition, compile_condition, compile_group, holds
from stockade.rules.errors import RuleError
from stockade.rules.index import Group, Index
from stockade.rules.lists import DataList, load_file
from stockade.rules.loader import Source, each_rule, expand, load_pack, read_definitions, read_rule
from stockade.rules.paths import resolve, root_paths, scalar_prefix, split_path
from stockade.rules.tags import frameworks, mitre

__all__ = [
    "LIST_OPS",
    "OPS",
    "PLACEHOLDER",
    "AlertDeltas",
    "Bursts",
    "DataList",
    "Group",
    "Index",
    "RuleError",
    "Source",
    "check_condition",
    "compile_condition",
    "compile_group",
    "each_rule",
    "expand",
    "frameworks",
    "holds",
    "load_file",
    "load_pack",
    "mitre",
    "read_definitions",
    "read_rule",
    "reads_of",
    "render",
    "resolve",
    "root_paths",
    "scalar_prefix",
    "split_path",
]
