"""What went wrong in an untrusted XML file, in words a user can act on (Wikipedia dumps, arXiv feeds).

Both readers parse with entities unresolved, no DTD loading and no network. What is left for
this module is the message:

- libxml2's line and column, taken from its error log when lxml's exception lost them
  (``iterparse`` reports an undeclared entity as "no element found (line 0)");
- a file that *declares* entities (a ``<!DOCTYPE [...]>`` internal subset) is refused in so
  many words. libxml2 stops a billion-laughs file with "Maximum entity amplification factor
  exceeded" at a position that is not the entity's (line 1, column 5 for a reference on line
  8), so no position is given for that case rather than a wrong one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

REFUSED = "the file declares entities (a DOCTYPE), which this reader refuses"
_MESSAGE_CHARS = 200  # libxml2 quotes names from the file; with huge_tree they can be megabytes
_POSITION = re.compile(r",? (?:line \d+, column \d+|\(line \d+\))\s*$")


@dataclass(frozen=True)
class XmlProblem:
    line: int  # 1-based; 0 when libxml2 gave no position worth showing
    column: int
    message: str  # libxml2's words, cut to _MESSAGE_CHARS
    entities: bool  # about entities: a declared one expanded too far, or one never declared

    def where(self, source: str) -> str:
        """``source:line:column``, or ``source`` when there is no trustworthy position."""
        return f"{source}:{self.line}:{self.column}" if self.line > 0 else source


def problem(e: etree.XMLSyntaxError) -> XmlProblem:
    """libxml2's own account of ``e``: the error itself, or the last error in its log."""
    line, column = e.position if e.position else (e.lineno or 0, 0)
    message, kind = e.msg or "", ""
    last = e.error_log.last_error if e.error_log else None
    if last is not None and (not line or message.startswith("no element found")):
        line, column, message, kind = last.line, last.column, last.message, last.type_name or ""
    elif last is not None and last.message == message:
        kind = last.type_name or ""
    # lxml appends its position to the message ("..., line 1, column 5"): it is given apart.
    message = _POSITION.sub("", message).strip()
    if len(message) > _MESSAGE_CHARS:
        message = message[: _MESSAGE_CHARS - 1] + "…"
    lowered = message.lower()
    expansion = "amplification" in lowered or "entity reference loop" in lowered or kind == "ERR_ENTITY_LOOP"
    entities = expansion or "ENTITY" in kind or "entity" in lowered
    if expansion:  # libxml2's position for these is not where the entity is: show none
        line = column = 0
    return XmlProblem(line, column, message, entities)


def declared_entities(element: etree._Element) -> list[str]:
    """The names of the entities the document of ``element`` declares in its internal DTD subset."""
    dtd = element.getroottree().docinfo.internalDTD
    return [] if dtd is None else [str(decl.name) for decl in dtd.iterentities()]


def first_entity_line(element: etree._Element) -> int:
    """The line of the first entity reference under ``element``, or 0 if it holds none."""
    for node in element.iter(etree.Entity):
        return node.sourceline or 0
    return 0
