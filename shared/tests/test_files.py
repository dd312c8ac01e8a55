"""Users' file names and active content posing as text (issue 25)."""

from __future__ import annotations

import pytest

from casebridge_shared.files import active_content, clean_file_name


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("invoice\u202efdp.png", "invoicefdp.png"),  # showed as "invoicegnp.pdf"
        ("a\u2066b\u2069\u200e\u200f\u061c.pdf", "ab.pdf"),  # isolates, marks
        ("\u202a\u202b\u202c\u202d.txt", "txt"),
        ("line\nbreak\r\t\x00.txt", "linebreak.txt"),
        ("zero\u200bwidth\ufeff.pdf", "zerowidth.pdf"),
        ("..\\..\\etc/passwd", "passwd"),
        ("C:\\Users\\x\\report.pdf", "report.pdf"),
        ("Gutachten a\u0308.pdf", "Gutachten \u00e4.pdf"),
        ("\u2028para\u2029.txt", "para.txt"),
        ("  .hidden. ", "hidden"),
        ("\u202e", ""),
    ],
)
def test_file_names_lose_their_control_and_format_characters(raw: str, clean: str) -> None:
    assert clean_file_name(raw) == clean


@pytest.mark.parametrize(
    "head",
    [
        b"<!DOCTYPE html><p>hi",
        b"  \n<html><body>",
        b"\xef\xbb\xbf<script>alert(1)</script>",
        b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        b"<?xml version='1.0'?><x/>",
        b"Dear customer,\n<iframe src=x>",
        b"click <a href='javascript:alert(1)'>",
        "<html>".encode("utf-16"),
        b"<p>paragraph",
    ],
)
def test_markup_is_active_content(head: bytes) -> None:
    assert active_content(head)


@pytest.mark.parametrize(
    "head",
    [b"Dear customer,\nplease find 3 < 4 and 5 > 2.", b"a <b is not a tag", "Grüße".encode(), b"%PDF-1.7"],
)
def test_plain_text_is_not(head: bytes) -> None:
    assert not active_content(head)
