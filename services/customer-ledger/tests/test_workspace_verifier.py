"""The workspace's own proof checker (``workspace/static/verify.js``) run in Debian's Chromium
against the RFC 9162 known-answer vectors and a real third-party signed note (issue 26 §3).

The page must never ask the server whether a proof is valid, so this module is the whole of
the check: every vector must give the expected verdict (``wantErr``), computed with
WebCrypto SHA-256 and Ed25519 in the browser. The files are served to the browser from the
package folder (a secure origin, 127.0.0.1, as WebCrypto needs) with the page policy.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Page, Route, async_playwright

from casebridge_shared.web import page_csp
from customer_ledger.journal.merkle import MemoryTree
from customer_ledger.journal.signed_note import Checkpoint, Signer, sign_checkpoint
from customer_ledger.workspace.api import STATIC

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DATA = Path(__file__).resolve().parent / "data"
ORIGIN = "http://127.0.0.1:9"  # never contacted: every request is answered by the route below


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium; run it through make"

    async def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path == "/":
            body, kind = b"<!doctype html><title>verifier</title>", "text/html"
        elif path == "/workspace/verify.js":
            body, kind = (STATIC / "verify.js").read_bytes(), "text/javascript"
        else:
            await route.fulfill(status=404, body=b"")
            return
        await route.fulfill(
            status=200, body=body, content_type=kind, headers={"Content-Security-Policy": page_csp()}
        )

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            tab = await browser.new_page()
            await tab.route(f"{ORIGIN}/**", serve)
            await tab.goto(f"{ORIGIN}/")
            yield tab
        finally:
            await browser.close()


# Runs a list of vectors through the module; answers [name, verified, error] for each.
RUN_VECTORS = """async ([kind, cases]) => {
  const v = await import('/workspace/verify.js');
  const b = (s) => s ? v.fromBase64(s) : new Uint8Array();
  const out = [];
  for (const [name, c] of cases) {
    try {
      if (kind === 'inclusion') {
        await v.verifyInclusion(BigInt(c.leafIdx), BigInt(c.treeSize), b(c.leafHash),
                                (c.proof || []).map(b), b(c.root));
      } else {
        await v.verifyConsistency(BigInt(c.size1), BigInt(c.size2), b(c.root1), b(c.root2),
                                  (c.proof || []).map(b));
      }
      out.push([name, true, null]);
    } catch (e) {
      out.push([name, false, `${e.constructor.name}: ${e.message}`]);
    }
  }
  return out;
}"""


def _vectors(kind: str) -> list[tuple[str, dict[str, object]]]:
    folder = DATA / "rfc9162" / kind
    files = sorted(folder.rglob("*.json"))
    assert len(files) > 20, f"test vectors missing under {folder}"
    return [(str(f.relative_to(folder)), json.loads(f.read_text())) for f in files]


@pytest.mark.parametrize("kind", ["inclusion", "consistency"])
async def test_the_page_verifier_gives_every_rfc9162_vector_its_expected_verdict(
    page: Page, kind: str
) -> None:
    cases = _vectors(kind)
    results = await page.evaluate(RUN_VECTORS, [kind, cases])
    expected = {name: not case["wantErr"] for name, case in cases}
    wrong = [(name, ok, error) for name, ok, error in results if ok != expected[name]]
    assert wrong == [], wrong
    assert len(results) == len(cases)
    # Rejections are the module's own ProofError, never a crash of the checker.
    assert all(error.startswith("ProofError") for _, ok, error in results if not ok), results
    assert sum(expected.values()) >= 5  # happy paths are among them


async def test_the_page_hashes_leaves_and_nodes_as_rfc9162_says(page: Page) -> None:
    tree = MemoryTree()
    leaves = [b"", b"\x00", b"\x10", b"first entry", "中文".encode()]
    for leaf in leaves:
        tree.append(leaf)
    computed = await page.evaluate(
        """async (leaves) => {
          const v = await import('/workspace/verify.js');
          const hashes = [];
          for (const l of leaves) hashes.push(await v.leafHash(v.fromBase64(l)));
          const text = await v.leafHash('中文');
          const node = await v.nodeHash(hashes[0], hashes[1]);
          return [hashes.map(v.toBase64), v.toBase64(text), v.toBase64(node)];
        }""",
        [base64.b64encode(leaf).decode() for leaf in leaves],
    )
    from customer_ledger.journal.merkle import leaf_hash, node_hash

    assert computed[0] == [base64.b64encode(leaf_hash(leaf)).decode() for leaf in leaves]
    assert computed[1] == base64.b64encode(leaf_hash("中文".encode())).decode()
    assert computed[2] == base64.b64encode(node_hash(leaf_hash(b""), leaf_hash(b"\x00"))).decode()


OPEN_NOTE = """async ([note, key]) => {
  const v = await import('/workspace/verify.js');
  try {
    const verifier = await v.parseVerifierKey(key);
    const text = await v.openNote(note, verifier);
    let checkpoint = null;
    try {
      const c = await v.openCheckpoint(note, verifier);
      checkpoint = [c.origin, String(c.size), v.toBase64(c.root)];
    } catch (e) { checkpoint = `${e.constructor.name}: ${e.message}`; }
    const parsed = v.parseCheckpoint(text);
    return {ok: true, text, checkpoint, parsed: [parsed.origin, String(parsed.size)]};
  } catch (e) {
    return {ok: false, error: `${e.constructor.name}: ${e.message}`};
  }
}"""


async def test_the_page_checks_the_go_checksum_databases_signed_checkpoint(page: Page) -> None:
    """A note signed by someone else's software (sum.golang.org): the bytes signed are exactly
    the text before the blank line, and one changed character breaks the signature."""
    note = (DATA / "signed-note" / "sum.golang.org.checkpoint").read_text()
    key = (DATA / "signed-note" / "sum.golang.org.vkey").read_text()
    result = await page.evaluate(OPEN_NOTE, [note, key])
    assert result["ok"], result
    assert result["text"] == note[: note.rindex("\n\n") + 1]
    assert result["parsed"] == ["go.sum database tree", "65664258"]
    # Its origin is not the key's name: as a checkpoint of our journal it is refused.
    assert result["checkpoint"] == (
        "ProofError: the checkpoint names the log go.sum database tree, not sum.golang.org"
    )
    tampered = note.replace("65664258", "65664259")
    result = await page.evaluate(OPEN_NOTE, [tampered, key])
    assert result == {"ok": False, "error": "ProofError: the signature by sum.golang.org does not verify"}


async def test_the_page_checks_our_journals_checkpoints_and_refuses_other_keys(page: Page) -> None:
    signer = Signer("casebridge.example/customer-ledger", Ed25519PrivateKey.generate())
    other = Signer("casebridge.example/customer-ledger", Ed25519PrivateKey.generate())
    tree = MemoryTree()
    for i in range(7):
        tree.append(f"entry {i}".encode())
    note = sign_checkpoint(signer, Checkpoint(signer.name, 7, tree.root()))
    ok = await page.evaluate(OPEN_NOTE, [note, str(signer.verifier)])
    assert ok["ok"] and ok["checkpoint"] == [signer.name, "7", base64.b64encode(tree.root()).decode()]
    # Signed by another key of the same name: no signature by the pinned key.
    forged = sign_checkpoint(other, Checkpoint(signer.name, 7, tree.root()))
    assert await page.evaluate(OPEN_NOTE, [forged, str(signer.verifier)]) == {
        "ok": False,
        "error": "ProofError: no signature by the journal's key",
    }
    # A witness's cosignature after ours is left alone.
    witness = Signer("witness.example", Ed25519PrivateKey.generate())
    cosigned = note + witness.sign(note[: note.rindex("\n\n") + 1]).split("\n\n", 1)[1]
    assert (await page.evaluate(OPEN_NOTE, [cosigned, str(signer.verifier)]))["ok"]
    # A blank line among the signatures, or none at all, is no signed note.
    assert (await page.evaluate(OPEN_NOTE, [note + "\n", str(signer.verifier)]))["error"] == (
        "ProofError: malformed signature line"
    )
    assert (await page.evaluate(OPEN_NOTE, [note.split("\n\n")[0] + "\n", str(signer.verifier)]))[
        "error"
    ] == "ProofError: a note has a blank line before its signatures"
    # A key whose id does not match its bytes is refused before anything is checked.
    name, key_id, raw = str(signer.verifier).split("+", 2)
    bad = f"{name}+{'00000000' if key_id != '00000000' else '11111111'}+{raw}"
    assert (await page.evaluate(OPEN_NOTE, [note, bad]))["error"] == (
        "ProofError: the verifier key's id does not match its key"
    )
