// The journal's proofs, checked in the browser by our own code (issue 26 §3): RFC 9162 Merkle
// hashing, inclusion and consistency proof verification with WebCrypto SHA-256, and the C2SP
// signed-note / tlog-checkpoint Ed25519 signature with WebCrypto Ed25519. Nothing here asks the
// server whether anything is valid: the server only hands over hashes, notes and the public key.
// Indexes and sizes are BigInt (a journal may outgrow 2^32, where JS bit operators stop working).

const encoder = new TextEncoder();
export const EM_DASH = "\u2014";

/** A verification that failed, with the reason in plain words. */
export class ProofError extends Error {}

export function fromBase64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new ProofError("not base64");
  }
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function toBase64(bytes) {
  let raw = "";
  for (const b of bytes) raw += String.fromCharCode(b);
  return btoa(raw);
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export const HASH_SIZE = 32;

/** RFC 9162 §2.1.1: leaf hash = SHA-256(0x00 || entry). */
export function leafHash(entry) {
  const bytes = typeof entry === "string" ? encoder.encode(entry) : entry;
  return sha256(concat(new Uint8Array([0]), bytes));
}

/** RFC 9162 §2.1.1: node hash = SHA-256(0x01 || left || right). */
export function nodeHash(left, right) {
  return sha256(concat(new Uint8Array([1]), left, right));
}

function checkHash(value, what) {
  if (!(value instanceof Uint8Array) || value.length !== HASH_SIZE) {
    throw new ProofError(`${what} is not a SHA-256 hash`);
  }
}

function big(n, what) {
  const value = typeof n === "bigint" ? n : BigInt(n);
  if (value < 0n) throw new ProofError(`${what} is negative`);
  return value;
}

/** RFC 9162 §2.1.3.2: the root an audit path leads to (throws ProofError when it cannot be one). */
export async function rootFromInclusionProof(index, size, leaf, proof) {
  let fn = big(index, "index");
  const treeSize = big(size, "tree size");
  if (fn >= treeSize) throw new ProofError(`index ${fn} is outside a tree of size ${treeSize}`);
  checkHash(leaf, "the leaf hash");
  let sn = treeSize - 1n;
  let r = leaf;
  for (const p of proof) {
    checkHash(p, "a proof node");
    if (sn === 0n) throw new ProofError("the proof is longer than the tree is deep");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("the proof is shorter than the tree is deep");
  return r;
}

/** RFC 9162 §2.1.3.2: resolves when the audit path proves ``leaf`` at ``index`` under ``root``. */
export async function verifyInclusion(index, size, leaf, proof, root) {
  checkHash(root, "the root");
  const computed = await rootFromInclusionProof(index, size, leaf, proof);
  if (!equal(computed, root)) throw new ProofError("the audit path does not lead to the root");
}

/** RFC 9162 §2.1.4.2: resolves when ``proof`` shows the tree of ``second`` extends that of ``first``. */
export async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  const size1 = big(first, "first size");
  const size2 = big(second, "second size");
  if (size1 > size2) throw new ProofError(`first size ${size1} is larger than second size ${size2}`);
  if (size1 === size2) {
    if (proof.length) throw new ProofError("equal sizes need an empty proof");
    if (!equal(firstRoot, secondRoot)) throw new ProofError("equal sizes but different roots");
    if (size1 === 0n && !equal(firstRoot, await sha256(new Uint8Array()))) {
      throw new ProofError("an empty tree has the empty root");
    }
    return;
  }
  checkHash(firstRoot, "the first root");
  checkHash(secondRoot, "the second root");
  if (size1 === 0n) throw new ProofError("consistency with an empty tree proves nothing");
  if (!proof.length) throw new ProofError("empty consistency proof");
  for (const p of proof) checkHash(p, "a proof node");
  const path = [...proof];
  if ((size1 & (size1 - 1n)) === 0n) path.unshift(firstRoot);
  let fn = size1 - 1n;
  let sn = size2 - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new ProofError("the proof is longer than the tree is deep");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("the proof is shorter than the tree is deep");
  if (!equal(fr, firstRoot)) throw new ProofError("the proof does not lead to the first root");
  if (!equal(sr, secondRoot)) throw new ProofError("the proof does not lead to the second root");
}

// --- C2SP signed-note and tlog-checkpoint ------------------------------------------------------

const ED25519 = 0x01;

async function keyId(name, publicRaw) {
  const digest = await sha256(concat(encoder.encode(name + "\n"), new Uint8Array([ED25519]), publicRaw));
  return digest.slice(0, 4);
}

function checkName(name) {
  if (!name || /\s/.test(name) || name.includes("+")) throw new ProofError(`invalid key name ${name}`);
}

/** A verifier key ``<name>+<key id hex>+<base64(0x01 || Ed25519 public key)>`` as WebCrypto key. */
export async function parseVerifierKey(text) {
  const parts = text.trim().split("+");
  if (parts.length < 3) throw new ProofError("malformed verifier key");
  const [name, idHex] = parts;
  const raw = fromBase64(parts.slice(2).join("+"));
  checkName(name);
  if (!/^[0-9a-f]{8}$/.test(idHex) || raw.length !== 33 || raw[0] !== ED25519) {
    throw new ProofError("the verifier key is not an Ed25519 signed-note key");
  }
  const publicRaw = raw.slice(1);
  const id = await keyId(name, publicRaw);
  if (toHex(id) !== idHex) throw new ProofError("the verifier key's id does not match its key");
  const key = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
  return { name, keyId: id, key };
}

/**
 * Checks a signed note (text, blank line, ``— <name> <base64(key id || signature)>`` lines) and
 * returns its text: exactly the bytes that were signed. Another signer's lines (a witness's
 * cosignature) are left alone; at least one line must be by ``verifier`` and every such line verify.
 */
export async function openNote(note, verifier) {
  if (!note.endsWith("\n")) throw new ProofError("a note ends in a newline");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new ProofError("a note has a blank line before its signatures");
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  let verified = false;
  // The block ends in the note's final newline; any other empty line is malformed.
  for (const line of block.slice(0, -1).split("\n")) {
    const prefix = `${EM_DASH} `;
    if (!line.startsWith(prefix)) throw new ProofError("malformed signature line");
    const fields = line.slice(prefix.length).split(" ");
    if (fields.length !== 2) throw new ProofError("malformed signature line");
    const [name, blob] = fields;
    const raw = fromBase64(blob);
    if (raw.length < 5) throw new ProofError("signature too short");
    if (name !== verifier.name || !equal(raw.slice(0, 4), verifier.keyId)) continue;
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, verifier.key, raw.slice(4), encoder.encode(text));
    if (!ok) throw new ProofError(`the signature by ${name} does not verify`);
    verified = true;
  }
  if (!verified) throw new ProofError("no signature by the journal's key");
  return text;
}

/** C2SP tlog-checkpoint text: origin, tree size, base64 root hash, optional extension lines. */
export function parseCheckpoint(text) {
  const lines = text.split("\n");
  if (lines.length < 4 || lines[lines.length - 1] !== "") {
    throw new ProofError("a checkpoint has an origin, a size and a root hash, each on its line");
  }
  const [origin, sizeLine, rootLine] = lines;
  if (!origin || !/^(0|[1-9][0-9]*)$/.test(sizeLine)) throw new ProofError("malformed checkpoint origin or size");
  const root = fromBase64(rootLine);
  checkHash(root, "the checkpoint's root");
  return { origin, size: BigInt(sizeLine), root };
}

/** The checkpoint a note carries, once its signature verified with ``verifier``. */
export async function openCheckpoint(note, verifier) {
  const checkpoint = parseCheckpoint(await openNote(note, verifier));
  if (checkpoint.origin !== verifier.name) {
    throw new ProofError(`the checkpoint names the log ${checkpoint.origin}, not ${verifier.name}`);
  }
  return checkpoint;
}
