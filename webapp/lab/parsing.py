"""The text a user types into a field or a query string, read as numbers, lists, ranges and row ids, with the
refusal's words (ValidationError): the forms, the API and the compare page read it here."""

import math

from django.core.exceptions import ValidationError

MAX_POINTS = 400  # a grid larger than this is almost always a typo (0:2:0.001)
# A parameter field's text, before it is split: 400 values of up to ~18 characters each, with room to spare.
MAX_VALUES_TEXT = 8000


def parse_values(text: str, cast, what: str) -> tuple:
    """'0.8, 1, 1.2' or a range 'start:stop:step' (stop included) -> a sorted tuple without repeats.

    The number of values is known from the text before any value is made (a list's items are counted before
    they are converted; a range's count is arithmetic on its three numbers), so a huge list or range is refused
    before it costs anything (DESIGN.md: grids are sized from their lengths before they are expanded)."""
    text = (text or "").strip()
    if not text:
        raise ValidationError(f"Give at least one {what}.")
    if len(text) > MAX_VALUES_TEXT:
        raise ValidationError(
            f"The {what} field has {len(text):,} characters; the limit is {MAX_VALUES_TEXT:,}. "
            f"Give at most {MAX_POINTS} values, or a range start:stop:step."
        )
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValidationError(
                f"{what.capitalize()}: {brief(text)} is not a range like '0:2:0.1' (start:stop:step)."
            )
        start, stop, step = (finite(part, text, what) for part in parts)
        steps = (stop - start) / step if step > 0 else -1.0  # inf when it overflows
        # stop is included when a whole number of steps reaches it (1e-9: 0.1 * 3 is not quite 0.3)
        count = math.floor(steps + 1e-9) + 1 if 0 <= steps <= MAX_POINTS else 0
        if not 1 <= count <= MAX_POINTS:
            raise ValidationError(
                f"The range {brief(text)} for {what} is empty or has more than {MAX_POINTS} "
                "values; give start <= stop and a step above 0."
            )
        numbers = [round(start + i * step, 10) for i in range(count)]
    else:
        parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
        if len(parts) > MAX_POINTS:
            raise ValidationError(
                f"{len(parts)} values for {what}; the limit is {MAX_POINTS}. Did you mean a range start:stop:step?"
            )
        numbers = [finite(part, text, what) for part in parts]
    try:
        values = [cast(number) for number in numbers]
    except ValueError:  # whole() on 2.5
        raise not_numbers(text, what, " (whole numbers only)") from None
    return tuple(sorted(set(values)))


def brief(text: str) -> str:
    """A user's text quoted in an error message, shortened: the message should not repeat 8,000 characters."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def not_numbers(text: str, what: str, detail: str = "") -> ValidationError:
    return ValidationError(
        f"{what.capitalize()}: {brief(text)} is not a list of numbers like '0.8, 1.0' or a range "
        f"like '0:2:0.1'{detail}."
    )


def finite(part: str, text: str, what: str) -> float:
    """One number of a list or range; inf and nan (also '1e400', which is inf) are not values anyone means."""
    try:
        number = float(part)
    except ValueError:
        raise not_numbers(text, what, f" ({brief(part.strip())} is not a number)") from None
    if not math.isfinite(number):
        raise not_numbers(text, what, f" ({brief(part.strip())} is not a finite number)")
    return number


MAX_ID = 2**63 - 1  # the largest primary key the databases hold; a larger number overflows SQLite's INTEGER


def row_id(text: str, what: str) -> int:
    """A row number taken from a query string or a plain form field (ModelChoiceField does its own)."""
    text = (text or "").strip()
    # isascii: '²'.isdigit() is true and int('²') fails; the length check keeps int() from a 4,000-digit string
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ID):
        raise ValidationError(
            f"{what}={brief(text)} is not a valid {what} number; choose one from the list on the page."
        )
    return int(text)


def whole(value: float) -> int:
    if value != int(value):
        raise ValueError(value)
    return int(value)


def as_text(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
