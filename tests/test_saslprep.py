import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpbee._errors import InvalidInputError, SASLprepError
from smtpbee._saslprep import saslprep


@pytest.mark.parametrize(
    ("given_text", "expected"),
    [
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),  # no transformation
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # FEMININE ORDINAL INDICATOR: NFKC
        ("\u2168", "IX"),  # ROMAN NUMERAL NINE: NFKC
    ],
)
def test_rfc4013_section3_examples(given_text: str, expected: str) -> None:
    assert saslprep(given_text) == expected


def test_rfc4013_section3_prohibited_character() -> None:
    with pytest.raises(SASLprepError) as caught:
        saslprep("\u0007")
    assert caught.value.table == "C.2.1"


def test_rfc4013_section3_bidi_violation() -> None:
    with pytest.raises(SASLprepError) as caught:
        saslprep("\u0627\u0031")
    assert caught.value.table == "bidi"


def test_non_ascii_space_becomes_ascii_space() -> None:
    assert saslprep("pass\u00a0word\u3000!") == "pass word !"


def test_mapped_to_nothing_characters_disappear() -> None:
    assert saslprep("a\u200bb\ufeffc\u180bd") == "abcd"


def test_printable_ascii_is_unchanged() -> None:
    text = "".join(chr(code) for code in range(0x20, 0x7F))
    assert saslprep(text) == text


def test_empty_string_stays_empty() -> None:
    assert saslprep("") == ""


@pytest.mark.parametrize(
    ("character", "table"),
    [
        ("\x00", "C.2.1"),
        ("\x7f", "C.2.1"),
        ("\u0085", "C.2.2"),
        ("\ue000", "C.3"),
        ("\ufdd0", "C.4"),
        ("\ud800", "C.5"),
        ("\ufffd", "C.6"),
        ("\u2ff0", "C.7"),
        ("\u200e", "C.8"),
        ("\U000e0001", "C.9"),
    ],
)
def test_prohibited_output(character: str, table: str) -> None:
    with pytest.raises(SASLprepError) as caught:
        saslprep(f"ab{character}cd")
    assert caught.value.table == table
    assert isinstance(caught.value, InvalidInputError)


def test_unassigned_code_point_refused_in_stored_string() -> None:
    # U+0221 was assigned after Unicode 3.2, the version stringprep is built on.
    with pytest.raises(SASLprepError) as caught:
        saslprep("a\u0221")
    assert caught.value.table == "A.1"


def test_unassigned_code_point_allowed_in_query_string() -> None:
    assert saslprep("a\u0221", allow_unassigned=True) == "a\u0221"


def test_all_right_to_left_text_is_accepted() -> None:
    assert saslprep("\u0627\u0628\u0629") == "\u0627\u0628\u0629"


def test_right_to_left_with_neutral_inside_is_accepted() -> None:
    assert saslprep("\u0627 1 \u0628") == "\u0627 1 \u0628"


def test_right_to_left_mixed_with_left_to_right_is_refused() -> None:
    with pytest.raises(SASLprepError) as caught:
        saslprep("\u0627a\u0628")
    assert caught.value.table == "bidi"
    assert "mixes" in str(caught.value)


def test_right_to_left_must_start_with_a_right_to_left_character() -> None:
    with pytest.raises(SASLprepError, match="start and end"):
        saslprep("1\u0627")


def test_error_message_never_quotes_the_input() -> None:
    secret = "hunter2-\u00e9\u0007"
    with pytest.raises(SASLprepError) as caught:
        saslprep(secret)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)


@given(st.text())
def test_result_is_a_fixed_point_or_an_error(text: str) -> None:
    try:
        prepared = saslprep(text, allow_unassigned=True)
    except SASLprepError:
        return
    assert saslprep(prepared, allow_unassigned=True) == prepared
