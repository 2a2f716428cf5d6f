"""Expressions: the fast translation gives Jinja's answers, and the HL7 fast path reads what
the reader's own Path.first reads."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.hl7.reader import compile_path, parse
from engine.mapping.accessors import LineSource, fast_first
from engine.mapping.expressions import ExpressionSyntaxError, compile_expression

NS = {
    "charge": {"transaction_type": "credit", "amount": Decimal("55.00"), "units": None,
               "procedure": {"code": "99213", "modifiers": ["25", "GT"]},
               "diagnoses": [{"code": "I10"}]},
    "unit_amount": Decimal("12.50"), "line": 2, "name": "x",
}
EXPRESSIONS = [
    "charge.transaction_type == 'credit' and charge.amount > 0",
    "-charge.amount",
    "charge.units is none",
    "charge.units is not none",
    "'95' in charge.procedure.modifiers or 'GT' in charge.procedure.modifiers",
    "'95' not in charge.procedure.modifiers",
    "unit_amount * 2 if unit_amount is not none else none",
    "charge.diagnoses[0].code ~ '-' ~ line",
    "(charge.amount + 1) / 2",
    "1 < line <= 2",
    "not charge.units",
    "charge.missing",
    "[line, 3][1] % 2",
    "charge.procedure.modifiers | length",
    "charge.procedure.code | lower",
]
JINJA = ImmutableSandboxedEnvironment()


class TestExpressions:
    @pytest.mark.parametrize("source", EXPRESSIONS)
    def test_translation_agrees_with_jinja(self, source: str) -> None:
        """Every expression evaluates to what the Jinja sandbox gives."""
        expected = JINJA.compile_expression(source, undefined_to_none=True)(**NS)
        assert compile_expression(source)(NS) == expected

    def test_syntax_error_is_reported(self) -> None:
        """An expression that does not parse raises ExpressionSyntaxError at load."""
        with pytest.raises(ExpressionSyntaxError):
            compile_expression("charge.amount >")
        with pytest.raises(ExpressionSyntaxError):
            compile_expression("a }}{{ b")


_VALUE = st.text(alphabet="AB1 &~^\\E", max_size=6)


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(_VALUE, min_size=1, max_size=4), rep=st.integers(1, 3),
       comp=st.integers(1, 3), sub=st.integers(1, 2))
def test_fast_first_reads_like_path_first(fields: list[str], rep: int, comp: int,
                                          sub: int) -> None:
    """The mapping's specialised reader returns exactly what Path.first returns."""
    raw = "MSH|^~\\&|A|B|C|D|20240101||DFT^P03|X1|P|2.5.1\rFT1|" + "|".join(fields) + "\r"
    msg = parse(raw)
    scope = LineSource(msg.groups("FT1")[0])
    for field in range(1, len(fields) + 2):
        path = compile_path(f"FT1-{field}[{rep}].{comp}.{sub}")
        assert fast_first(path)(scope) == path.first(scope)
        assert fast_first(path)(msg) == path.first(msg)
