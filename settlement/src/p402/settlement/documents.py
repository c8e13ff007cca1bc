"""Receipts as documents: a one-page PDF for people, CSV rows for spreadsheets.

Both render the receipt as the API shows it (:func:`p402.settlement.receipts.receipt_json`):
the sealed body, its hash and, when anchored, the anchor. The PDF uses the standard PDF
fonts, which cover Windows-1252 (Western European letters, the euro sign, dashes and curly
quotes); other letters are shown without their accents where Unicode decomposes them
(``Dvořák`` as ``Dvorák``, ``Nguyễn`` as ``Nguyen``), anything else as ``?``. The JSON and CSV
receipts keep every character exactly.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fpdf import FPDF
    from fpdf.enums import MethodReturnValue, XPos, YPos

__all__ = ["CSV_COLUMNS", "receipt_pdf", "receipts_csv"]

CSV_COLUMNS: Final = (
    "receipt_id",
    "sequence",
    "session",
    "part",
    "period_from",
    "period_to",
    "sealed_at",
    "departments",
    "projects",
    "employees",
    "models",
    "providers",
    "events",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced_events",
    "policy_results",
    "privacy_mode",
    "receipt_hash",
    "previous_receipt_hash",
    "status",
    "batch_seq",
    "chain_id",
    "tx_hash",
    "block_number",
)


_PDF_ENCODING: Final = "windows-1252"
"""What the standard PDF fonts can show (fpdf2's ``core_fonts_encoding``)."""


def _printable_char(char: str) -> str:
    """``char`` as the standard fonts can show it: itself, its letters without their accents
    or other marks (compatibility decomposition), or ``?``."""
    try:
        char.encode(_PDF_ENCODING)
    except UnicodeEncodeError:
        pass
    else:
        return char
    kept = []
    for part in unicodedata.normalize("NFKD", char):
        if unicodedata.combining(part):
            continue
        try:
            part.encode(_PDF_ENCODING)
        except UnicodeEncodeError:
            return "?"
        kept.append(part)
    return "".join(kept) or "?"


def _printable(text: str) -> str:
    """``text`` as the standard PDF fonts can show it (see the module docstring)."""
    try:
        text.encode(_PDF_ENCODING)
    except UnicodeEncodeError:
        return "".join(map(_printable_char, text))
    return text


def _joined(values: Sequence[str], limit: int) -> str:
    if not values:
        return "-"
    shown = ", ".join(values[:limit])
    return shown if len(values) <= limit else f"{shown} and {len(values) - limit} more"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "-"


def _shown(value: object) -> str:
    return "-" if value is None else str(value)


def _csv_row(receipt: Mapping[str, Any]) -> list[object]:
    body = receipt["receipt"]
    settlement = receipt.get("settlement") or {}
    anchored = receipt.get("status") == "anchored"
    owners = body["owners"]
    return [
        receipt["id"],
        body["sequence"],
        body["session"],
        body["part"],
        body["period"]["from"],
        body["period"]["to"],
        body["sealed_at"],
        ";".join(owners["department"]),
        ";".join(owners["project"]),
        ";".join(owners["employee"]),
        ";".join(body["models"]),
        ";".join(body["providers"]),
        body["events"]["count"],
        body["tokens"]["input"],
        body["tokens"]["output"],
        body["cost_usd"],
        body["events"]["unpriced"],
        ";".join(f"{name}={count}" for name, count in sorted(body["policy_results"].items())),
        body["privacy_mode"],
        receipt["receipt_hash"],
        body["previous_receipt_hash"],
        receipt.get("status"),
        settlement.get("batch_seq"),
        settlement.get("chain_id") if anchored else None,
        settlement.get("tx_hash") if anchored else None,
        settlement.get("block_number") if anchored else None,
    ]


def receipts_csv(receipts: Iterable[Mapping[str, Any]]) -> str:
    """A header and one row per receipt (lists joined with ``;``; absent values empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for receipt in receipts:
        writer.writerow(["" if value is None else value for value in _csv_row(receipt)])
    return buffer.getvalue()


class _Page:
    """A one-page A4 document of labelled rows in sections; each row is clipped to a few
    lines, so that the longest receipt still fits on the page."""

    LABEL_WIDTH: Final = 44.0
    LINE: Final = 4.3
    BOTTOM: Final = 10.0  # mm kept free at the foot of the page

    def __init__(self, title: str) -> None:
        # fpdf2 (with fontTools and Pillow) is loaded by the first document, not by every
        # process that imports this module: a server that never renders one never pays for it.
        from fpdf import FPDF
        from fpdf.enums import MethodReturnValue, XPos, YPos

        self._left: XPos = XPos.LMARGIN
        self._next: YPos = YPos.NEXT
        self._lines: MethodReturnValue = MethodReturnValue.LINES
        self.pdf: FPDF = FPDF(orientation="portrait", unit="mm", format="A4")
        self.pdf.core_fonts_encoding = _PDF_ENCODING
        self.pdf.set_auto_page_break(False)
        self.pdf.set_margins(16, 12, 16)
        self.pdf.set_title(title)
        self.pdf.set_creator("P402")
        self.pdf.add_page()

    def _clipped(self, text: str, width: float, max_lines: int) -> str:
        lines = self.pdf.multi_cell(width, self.LINE, text, dry_run=True, output=self._lines)
        assert isinstance(lines, list)
        if len(lines) <= max_lines:
            return text
        kept = lines[:max_lines]
        kept[-1] = kept[-1][: max(len(kept[-1]) - 3, 0)].rstrip() + "..."
        return "\n".join(kept)

    def heading(self, title: str, subtitle: str) -> None:
        self.pdf.set_font("Helvetica", "B", 16)
        self.pdf.cell(0, 8, _printable(title), new_x=self._left, new_y=self._next)
        self.pdf.set_font("Helvetica", "", 9)
        self.pdf.set_text_color(90, 90, 90)
        subtitle = self._clipped(_printable(subtitle), self.pdf.epw, 1)
        self.pdf.cell(0, 5, subtitle, new_x=self._left, new_y=self._next)
        self.pdf.set_text_color(0, 0, 0)

    def section(self, title: str) -> None:
        self.pdf.ln(1.8)
        self.pdf.set_font("Helvetica", "B", 10.5)
        self.pdf.cell(0, 5.5, _printable(title), border="B", new_x=self._left, new_y=self._next)
        self.pdf.ln(0.8)

    def row(self, label: str, value: str, *, mono: bool = False, max_lines: int = 1) -> None:
        self.pdf.set_font("Helvetica", "B", 8.5)
        self.pdf.cell(self.LABEL_WIDTH, self.LINE, _printable(label))
        self.pdf.set_font("Courier" if mono else "Helvetica", "", 8 if mono else 8.5)
        width = self.pdf.epw - self.LABEL_WIDTH
        text = self._clipped(_printable(value), width, max_lines)
        self.pdf.multi_cell(width, self.LINE, text, new_x=self._left, new_y=self._next, align="L")

    def list_row(self, label: str, values: Sequence[str], *, max_lines: int = 1) -> None:
        """A row of as many of ``values`` as fit, then how many more there are."""
        self.pdf.set_font("Helvetica", "", 8.5)
        width = self.pdf.epw - self.LABEL_WIDTH
        shown = _joined(values[:1], 1)
        for count in range(min(len(values), 12), 0, -1):
            candidate = _printable(_joined(values, count))
            lines = self.pdf.multi_cell(
                width, self.LINE, candidate, dry_run=True, output=self._lines
            )
            if isinstance(lines, list) and len(lines) <= max_lines:
                shown = candidate
                break
        self.row(label, shown, max_lines=max_lines)

    def paragraph(self, text: str, *, mono: bool = False) -> None:
        self.pdf.set_font("Courier" if mono else "Helvetica", "", 8 if mono else 8.5)
        text = self._clipped(_printable(text), self.pdf.epw, 4)
        self.pdf.multi_cell(0, self.LINE, text, new_x=self._left, new_y=self._next)

    def bytes(self) -> bytes:
        if self.pdf.get_y() > self.pdf.h - self.BOTTOM:  # a layout bug, never the data
            raise OverflowError("the receipt does not fit on one page")
        return bytes(self.pdf.output())


def receipt_pdf(receipt: Mapping[str, Any]) -> bytes:
    """A clean one-page PDF of the receipt: who, when, what it cost, its integrity, its
    anchor, and how to verify it independently."""
    body = receipt["receipt"]
    owners = body["owners"]
    tokens = body["tokens"]
    events = body["events"]
    settlement = receipt.get("settlement") or {}
    anchored = receipt.get("status") == "anchored"
    page = _Page(f"P402 receipt {receipt['id']}")
    kind = "Session receipt" if body["session"] is not None else "Receipt"
    page.heading(
        f"P402 {kind.lower()}",
        f"{body['tenant']}  -  receipt {receipt['id']}  -  sealed {body['sealed_at']}",
    )

    page.section("Receipt")
    page.row("Tenant", body["tenant"])
    page.row("Receipt id", receipt["id"], mono=True)
    page.row(
        "Session", _shown(body["session"]) + (f" (part {body['part']})" if body["part"] > 1 else "")
    )
    if body["continues"]:
        page.row("Continues", body["continues"], mono=True)
    page.row("Period", f"{body['period']['from']}  to  {body['period']['to']}")
    page.row("Sealed", f"{body['sealed_at']} ({body['sealed_by']})")
    page.row("Sequence", f"{body['sequence']} in the tenant's receipt chain")

    page.section("Owners")
    for dimension in ("department", "project", "client", "employee", "workflow", "feature"):
        if owners.get(dimension):
            page.list_row(dimension.capitalize(), owners[dimension])
    if not any(owners.values()):
        page.row("Owners", "-")

    page.section("Usage and cost")
    page.list_row("Models", body["models"])
    page.list_row("Providers", body["providers"])
    page.row("Events", str(events["count"]))
    page.row("Tokens in / out", f"{_shown(tokens['input'])} / {_shown(tokens['output'])}")
    if tokens["cache_read"] is not None or tokens["reasoning"] is not None:
        page.row(
            "Cache read / reasoning",
            f"{_shown(tokens['cache_read'])} / {_shown(tokens['reasoning'])}",
        )
    cost = body["cost_usd"]
    page.row(
        "Cost (USD)",
        ("not priced" if cost is None else cost)
        + (f"  ({events['unpriced']} event(s) unpriced)" if events["unpriced"] else ""),
    )

    page.section("Policy and privacy")
    page.row("Policy results", _counts(body["policy_results"]))
    rationale = body["routing"]["rationale"]
    if rationale:
        page.list_row("Routing rationale", rationale, max_lines=2)
    changes = body["routing"]["model_changes"]
    if changes:
        page.list_row(
            "Model changes",
            [f"{c['from']} -> {c['to']} ({c['events']})" for c in changes],
            max_lines=2,
        )
    page.row("Privacy mode", f"{_shown(body['privacy_mode'])}  ({_counts(body['privacy_modes'])})")

    page.section("Integrity")
    page.row("Receipt hash", receipt["receipt_hash"], mono=True)
    page.row("Previous hash", _shown(body["previous_receipt_hash"]), mono=True)
    page.row("Events root", events["root"], mono=True)

    page.section("Anchor")
    if anchored:
        page.row("Chain id", str(settlement["chain_id"]))
        page.row("Transaction", settlement["tx_hash"], mono=True)
        page.row("Block", f"{settlement['block_number']}")
        page.row("Block hash", settlement["block_hash"], mono=True)
        page.row("Submitter", settlement["submitter"], mono=True)
        page.row(
            "Batch",
            f"{settlement['batch_seq']} "
            f"(leaf {settlement['leaf_index']} of {settlement['tree_size']})",
        )
        page.row("Merkle root", settlement["root"], mono=True)
    else:
        state = settlement.get("state")
        page.row("Status", "sealed; not anchored yet" + (f" (batch {state})" if state else ""))

    page.section("How to verify")
    page.paragraph(
        "The receipt hash is the SHA-256 of the receipt's RFC 8785 canonical JSON. Its "
        "RFC 6962 Merkle proof leads to the root carried by the anchor transaction. Check it "
        "against any node of the chain, without trusting P402:"
    )
    page.paragraph(
        f"  curl -H 'x-p402-api-key: KEY' .../v1/receipts/{receipt['id']}/proof > bundle.json\n"
        "  p402 verify bundle.json --rpc-url RPC_URL",
        mono=True,
    )
    return page.bytes()
