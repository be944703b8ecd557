"""CLIP's BPE tokenizer and text transformer in plain torch, read from diffusers-layout folders.

Why: importing transformers costs seconds per process, and localization needs only these two small pieces
of it. Both reproduce transformers 5.24 exactly (`CLIPTokenizer`, the tokenizers-backed class, and
`CLIPTextModel` with its SDPA attention), so maps do not change with the runtime. Whatever a folder
holds that they do not reproduce raises `UnsupportedCheckpoint`, and the loader then uses transformers.

This module imports torch, safetensors and the standard library only, never transformers or diffusers.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
from genpromp_annotate.engine.native.uninitialised import LayerNorm, Linear
from genpromp_annotate.engine.native.weights import load_strict, read_tensors
from genpromp_annotate.errors import ModelLoadError

# ---- tokenizer ----------------------------------------------------------------------------------------

END_OF_WORD = "</w>"
NO_MAX_LENGTH = int(1e30)  # transformers' model_max_length when a folder names none
SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
CLIP_DEFAULT_SPECIALS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                         "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
CLIP_TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")

# Unicode White_Space: what `\s` matches in the Oniguruma regexes of CLIP's normalizer and pre-tokenizer
# (Python's str.isspace() also takes U+001C..U+001F, which those keep as punctuation).
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                       + "".join(chr(c) for c in range(0x2000, 0x200B)))
_WHITESPACE_RUN = re.compile("[" + "".join(sorted(WHITESPACE)) + "]+")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
REGEX_SPECIALS = ("<|startoftext|>", "<|endoftext|>")  # kept whole by CLIP's split regex, then cut by ByteLevel's
CAPITAL_SIGMA = "\u03a3"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (ByteLevel pre-tokenizer)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = _bytes_to_unicode()


def normalize(text: str) -> str:
    """CLIP's normalizer: NFC, every whitespace run → one space, lowercase (per character, as the Rust
    `char::to_lowercase` does: no final-sigma rule, which Python's `str.lower` applies)."""
    text = _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", text))
    if CAPITAL_SIGMA in text:
        return "".join(ch.lower() for ch in text)
    return text.lower()


def _kind(ch: str) -> str:
    """'L' letter, 'N' number, 'S' whitespace, 'P' anything else (the classes of CLIP's split regex)."""
    if ch in WHITESPACE:
        return "S"
    category = unicodedata.category(ch)[0]
    return category if category in "LN" else "P"


def split_words(text: str) -> list[str]:
    """CLIP's pre-tokenizer on normalized text: the matches of
    `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`
    (whitespace dropped), each then split again by ByteLevel's GPT-2 regex, which only cuts the two
    special literals (into `<|`, the letters, `|>`)."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        kind = _kind(text[i])
        if kind == "S":
            i += 1
            continue
        literal = _literal_at(text, i)
        if literal:
            words.extend(("<|", literal[2:-2], "|>") if literal in REGEX_SPECIALS else (literal,))
            i += len(literal)
            continue
        j = i + 1
        if kind != "N":  # a run of letters, or of punctuation/symbols; a digit stands alone
            while j < n and _kind(text[j]) == kind:
                j += 1
        words.append(text[i:j])
        i = j
    return words


def _literal_at(text: str, i: int) -> str:
    """The special literal or contraction that the split regex matches at `i` (tried before the classes)."""
    if text[i] == "<":
        for literal in REGEX_SPECIALS:
            if text.startswith(literal, i):
                return literal
    elif text[i] == "'":
        for literal in CONTRACTIONS:
            if text.startswith(literal, i):
                return literal
    return ""


@dataclass
class AddedToken:
    """A token matched whole in text before BPE (transformers/tokenizers `AddedToken`)."""

    content: str
    token_id: int
    special: bool
    normalized: bool  # matched in the normalized text (else in the raw text)


@dataclass
class Encoding:
    """What `ClipTokenizer(...)` returns: `input_ids` (a list, or a list of lists for a batch)."""

    input_ids: Any
    attention_mask: Any

    def __getitem__(self, key: str) -> Any:  # `tok(text)["input_ids"]`, as with a transformers BatchEncoding
        return getattr(self, key)


@dataclass
class TokenizerFiles:
    """What a tokenizer folder says, read once (see `read_tokenizer_folder`)."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    merges_file: Path
    config: dict[str, Any]
    specials: dict[str, Any] = field(default_factory=dict)  # attribute → str | token dict | None
    extra_specials: list[Any] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)  # token dicts with "content", sorted by id


class ClipTokenizer:
    """CLIP's byte-level BPE tokenizer, equal to transformers 5.24 `CLIPTokenizer.from_pretrained(folder)`.

    That class is backed by the `tokenizers` library: NFC + whitespace runs → one space + lowercase,
    CLIP's split regex, GPT-2 byte-level symbols, BPE with the `</w>` end-of-word suffix, and
    `<|startoftext|> … <|endoftext|>` around the ids with `add_special_tokens`. Added tokens are matched
    whole before all of that. There is no ftfy clean-up (the old slow class's optional step).
    """

    def __init__(self, files: TokenizerFiles) -> None:
        self._vocab = files.vocab
        self._vocab_r = {i: t for t, i in files.vocab.items()}
        self._ranks = {pair: rank for rank, pair in enumerate(files.merges)}
        _check_merges(files.merges, files.vocab, files.merges_file)
        self._cache: dict[str, list[int]] = {}
        self._added: dict[str, AddedToken] = {}
        self._added_r: dict[int, AddedToken] = {}
        self._raw_pattern: re.Pattern[str] | None = None
        self._normalized_pattern: re.Pattern[str] | None = None
        self._normalized_ids: dict[str, int] = {}
        self.model_max_length = int(files.config.get("model_max_length") or NO_MAX_LENGTH)
        self._special_tokens = self._register_folder_tokens(files)
        self._refresh_patterns()

    @classmethod
    def from_folder(cls, path: str | Path) -> ClipTokenizer:
        """A `tokenizer/` folder: vocab.json + merges.txt (or tokenizer.json, which transformers prefers),
        and tokenizer_config.json / special_tokens_map.json / added_tokens.json when present."""
        with _gc_paused():
            return cls(read_tokenizer_folder(Path(path)))

    def _register_folder_tokens(self, files: TokenizerFiles) -> dict[str, str | None]:
        """Add the folder's added and special tokens in transformers' order (the last word on a token's flags
        wins); returns special attribute → token string."""
        by_content: dict[str, dict[str, Any]] = {}
        for entry in files.added:
            content, special, normalized = _token_flags(entry, default_special=False)
            by_content[content] = entry
            self._add(content, special, normalized)
        names: dict[str, str | None] = {}
        for attribute in SPECIAL_ATTRIBUTES:
            value = files.specials.get(attribute)
            names[attribute] = None if value is None else _content(value)
        for value in [files.specials[a] for a in SPECIAL_ATTRIBUTES if files.specials.get(a)] + files.extra_specials:
            value = by_content.get(_content(value), value)
            content, _, normalized = _token_flags(value, default_special=True)
            self._add(content, True, normalized)
        return names

    # -- special tokens ---------------------------------------------------------------------------------
    def _special_id(self, attribute: str) -> int | None:
        token = self._special_tokens.get(attribute)
        return None if token is None else self.convert_tokens_to_ids(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        token = self._special_tokens.get("unk_token")
        return None if token is None else self._token_to_id(token)

    # -- vocabulary -------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """The BPE vocabulary without added tokens."""
        return len(self._vocab)

    def __len__(self) -> int:
        """Vocabulary and added tokens (an added token that is also a vocabulary entry counts once)."""
        return len(self._vocab) + sum(1 for t in self._added if t not in self._vocab)

    def _token_to_id(self, token: str) -> int | None:
        added = self._added.get(token)
        return added.token_id if added is not None else self._vocab.get(token)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        """Id of each token (added tokens first, then the vocabulary); unknown → `unk_token_id`."""
        if isinstance(tokens, str):
            found = self._token_to_id(tokens)
            return found if found is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> Any:
        """Token string of each id; an id that names nothing → None (as transformers)."""
        if isinstance(ids, int):
            added = self._added_r.get(ids)
            return added.content if added is not None else self._vocab_r.get(ids)
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def add_tokens(self, new_tokens: str | Sequence[str], special_tokens: bool = False) -> int:
        """Add tokens matched whole in text; a new one gets the next id, one already in the vocabulary keeps
        its id. Returns how many were not added tokens yet (tokenizers counts vocabulary entries too)."""
        if isinstance(new_tokens, str):
            new_tokens = [new_tokens]
        count = 0
        for token in new_tokens:
            if token and token not in self._added:
                self._add(token, special=special_tokens, normalized=not special_tokens)
                count += 1
        if count:
            self._refresh_patterns()
        return count

    def _add(self, content: str, special: bool, normalized: bool) -> None:
        """Register (or, for content already added, update) an added token; tokenizers' id rule."""
        known = self._token_to_id(content)
        if known is None:
            top = max(self._added_r, default=-1)
            known = top + 1 if top >= len(self._vocab) else len(self._vocab)
        token = AddedToken(content, known, special, normalized)
        self._added[content] = token
        self._added_r[known] = token

    def _refresh_patterns(self) -> None:
        raw = [t.content for t in self._added.values() if not t.normalized]
        norm = [normalize(t.content) for t in self._added.values() if t.normalized]
        self._raw_pattern = _alternation(raw)
        self._normalized_pattern = _alternation(norm)
        self._normalized_ids = {normalize(t.content): t.token_id for t in self._added.values() if t.normalized}

    # -- encoding ---------------------------------------------------------------------------------------
    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True, padding: bool | str = False,
                 truncation: bool | str = False, max_length: int | None = None) -> Encoding:
        """Token ids of `text` (or of each text of a list), as transformers' `tokenizer(text, ...)`.

        padding: False, True/"longest" (to the longest of the batch) or "max_length"; truncation: True
        cuts the ids (not the special tokens) to `max_length`, default `model_max_length`.
        """
        texts = [text] if isinstance(text, str) else list(text)
        limit = max_length if max_length is not None else self.model_max_length
        cut = truncation not in (False, "do_not_truncate")
        rows = [self._encode_one(t, add_special_tokens, limit if cut else None) for t in texts]
        masks = [[1] * len(row) for row in rows]
        width = _padded_width(padding, limit, rows)
        if width is not None:
            pad = self.pad_token_id if self.pad_token_id is not None else 0
            masks = [mask + [0] * (width - len(mask)) for mask in masks]
            rows = [row + [pad] * (width - len(row)) for row in rows]
        if isinstance(text, str):
            return Encoding(rows[0], masks[0])
        return Encoding(rows, masks)

    def _encode_one(self, text: str, add_special_tokens: bool, limit: int | None) -> list[int]:
        ids = self.encode_text(text)
        if not add_special_tokens:
            return ids if limit is None else ids[:limit]
        bos, eos = self.bos_token_id, self.eos_token_id
        specials = [i for i in (bos, eos) if i is not None]
        if limit is not None:
            ids = ids[: max(limit - len(specials), 0)]
        return [*([bos] if bos is not None else []), *ids, *([eos] if eos is not None else [])]

    def encode_text(self, text: str) -> list[int]:
        """Ids of `text` without special tokens around it."""
        ids: list[int] = []
        for piece, token_id in _split_on(text, self._raw_pattern, self._raw_id):
            if token_id is not None:
                ids.append(token_id)
                continue
            for part, part_id in _split_on(normalize(piece), self._normalized_pattern, self._normalized_ids.get):
                if part_id is not None:
                    ids.append(part_id)
                else:
                    ids.extend(i for word in split_words(part) for i in self._bpe(word))
        return ids

    def _raw_id(self, content: str) -> int | None:
        token = self._added.get(content)
        return token.token_id if token is not None else None

    def _bpe(self, word: str) -> list[int]:
        """BPE ids of one pre-tokenized word, cached per word."""
        cached = self._cache.get(word)
        if cached is None:
            symbols = merge_symbols(_byte_symbols(word), self._ranks)
            unk = self.unk_token_id
            cached = [i for i in (self._vocab.get(s, unk) for s in symbols) if i is not None]
            self._cache[word] = cached
        return cached


def _padded_width(padding: bool | str, limit: int, rows: list[list[int]]) -> int | None:
    """The length rows are padded to: None (no padding), the longest row, or `limit` ("max_length")."""
    if padding is True or padding == "longest":
        return max(map(len, rows), default=0)
    if padding == "max_length":
        return limit
    if padding in (False, "do_not_pad"):
        return None
    raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")


def _byte_symbols(word: str) -> list[str]:
    """The word's UTF-8 bytes as GPT-2 symbols, the last one carrying the end-of-word suffix."""
    symbols = [BYTE_TO_CHAR[b] for b in word.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


def merge_symbols(symbols: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Apply the lowest-ranked merge everywhere, left to right, until none applies (CLIP's BPE loop)."""
    while len(symbols) > 1:
        best = min(itertools.pairwise(symbols), key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def _alternation(contents: Iterable[str]) -> re.Pattern[str] | None:
    """A regex matching any of `contents`, leftmost-longest (as tokenizers' Aho-Corasick matcher)."""
    unique = sorted({c for c in contents if c}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, unique))) if unique else None


def _split_on(text: str, pattern: re.Pattern[str] | None, lookup: Any) -> Iterator[tuple[str, int | None]]:
    """`text` cut around the matches of `pattern`: (match, its id) and (text between, None), empty parts left out."""
    start = 0
    if pattern is not None:
        for match in pattern.finditer(text):
            if match.start() > start:
                yield text[start : match.start()], None
            yield match.group(), lookup(match.group())
            start = match.end()
    if start < len(text):
        yield text[start:], None


def _check_merges(merges: list[tuple[str, str]], vocab: Mapping[str, int], merges_file: Path) -> None:
    """tokenizers refuses a merge whose parts or result are not vocabulary entries; so do we."""
    parts = {left for left, _ in merges} | {right for _, right in merges} | {a + b for a, b in merges}
    if parts - vocab.keys():
        line, (left, right) = next((i, (a, b)) for i, (a, b) in enumerate(merges, start=1)
                                   if a not in vocab or b not in vocab or a + b not in vocab)
        raise ModelLoadError(f"{merges_file}: merge {line} ({left!r} {right!r}) is not in the vocabulary")


# ---- tokenizer folder ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection while ~10^5 tuples of a vocabulary are built: the collections their
    allocations trigger otherwise double the load time (and there is no cycle to collect)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read the CLIP tokenizer file ({exc})") from exc


def _read_optional_json(path: Path) -> Any:
    return _read_json(path) if path.is_file() else None


def _optional_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file that may be absent ({} then)."""
    data = _read_optional_json(path)
    if data is not None and not isinstance(data, dict):
        raise ModelLoadError(f"{path}: not a JSON object")
    return data or {}


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt as tokenizers reads it: lines split on "\\n" (a trailing "\\r" dropped), `#version` lines
    skipped, every other line exactly `left right`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read the CLIP tokenizer file ({exc})") from exc
    lines = text.removesuffix("\n").split("\n") if text else []
    parts = [line.removesuffix("\r").partition(" ") for line in lines if not line.startswith("#version")]
    for number, (left, space, right) in enumerate(parts, start=1):
        if not space or " " in right:
            raise ModelLoadError(f"{path}: merge {number} is not 'left right': {left + space + right!r}")
    return [(left, right) for left, _, right in parts]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing (a CLIP tokenizer folder holds vocab.json and merges.txt)")
    return path


def _model_from_tokenizer_json(data: Any, path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a tokenizer.json (CLIPTokenizer keeps only these and its added tokens)."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
        raise UnsupportedCheckpoint(f"{path}: model is not a BPE model")
    vocab = model.get("vocab")
    if isinstance(vocab, list):
        vocab = {(t[0] if isinstance(t, list) else t): i for i, t in enumerate(vocab)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    if not isinstance(vocab, dict) or any(len(m) != 2 for m in merges):
        raise ModelLoadError(f"{path}: model.vocab / model.merges are not a BPE vocabulary and merges")
    return vocab, [(m[0], m[1]) for m in merges]


def read_tokenizer_folder(folder: Path) -> TokenizerFiles:
    """Read a tokenizer folder with the precedence rules of transformers 5.24 `from_pretrained`.

    tokenizer.json, when present, supplies the vocabulary and merges instead of vocab.json/merges.txt.
    Added tokens come from tokenizer_config.json's `added_tokens_decoder`; without one, from
    added_tokens.json and tokenizer.json's `added_tokens`, and special_tokens_map.json then overrides the
    config's special tokens.
    """
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such CLIP tokenizer folder")
    config = _optional_json_object(folder / "tokenizer_config.json")
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class is not None and tokenizer_class not in CLIP_TOKENIZER_CLASSES:
        raise UnsupportedCheckpoint(f"{folder / 'tokenizer_config.json'}: tokenizer_class {tokenizer_class!r}")
    tokenizer_json = _read_optional_json(folder / "tokenizer.json")
    if tokenizer_json is not None:
        vocab, merges = _model_from_tokenizer_json(tokenizer_json, folder / "tokenizer.json")
        merges_file = folder / "tokenizer.json"
    else:
        vocab = _read_json(_require(folder / "vocab.json"))
        merges_file = _require(folder / "merges.txt")
        merges = _read_merges(merges_file)
    if not isinstance(vocab, dict) or not set(map(type, vocab.values())) <= {int}:
        raise ModelLoadError(f"{merges_file.parent}: the vocabulary is not a token → id object")
    files = TokenizerFiles(vocab=vocab, merges=merges, merges_file=merges_file, config=config)
    _read_token_lists(files, folder, tokenizer_json)
    return files


def _read_token_lists(files: TokenizerFiles, folder: Path, tokenizer_json: Any) -> None:
    """Fill the special and added tokens of `files` (see `read_tokenizer_folder`)."""
    config = files.config
    specials = {k: config[k] for k in SPECIAL_ATTRIBUTES if k in config}
    extra = list(config.get("extra_special_tokens") or config.get("additional_special_tokens") or [])
    decoder = config.get("added_tokens_decoder")
    added: dict[int, dict[str, Any]] = {}
    if isinstance(decoder, dict):
        if not all(isinstance(t, dict) and "content" in t for t in decoder.values()):
            raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: added_tokens_decoder holds a non-token entry")
        added = {int(i): dict(t) for i, t in decoder.items()}
    else:
        special_map = _optional_json_object(folder / "special_tokens_map.json")
        for key, value in special_map.items():
            if key in SPECIAL_ATTRIBUTES:
                specials[key] = {**value, "special": True} if isinstance(value, dict) else value
            elif key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                extra += [v for v in value if v not in extra]
        legacy = _optional_json_object(folder / "added_tokens.json")
        special_names = {_content(v) for v in specials.values() if v} | {_content(v) for v in extra}
        for content, index in legacy.items():
            is_special = content in special_names
            added[int(index)] = {"content": content, "special": is_special, "normalized": not is_special}
        for entry in (tokenizer_json or {}).get("added_tokens", []):
            added[int(entry["id"])] = {k: v for k, v in entry.items() if k != "id"}
    files.specials = {**CLIP_DEFAULT_SPECIALS, **specials}
    files.extra_specials = extra
    files.added = [added[i] for i in sorted(added)]


def _content(value: Any) -> str:
    return str(value["content"]) if isinstance(value, dict) else str(value)


def _token_flags(value: Any, default_special: bool) -> tuple[str, bool, bool]:
    """(content, special, normalized) of a token given as a string or an AddedToken dict."""
    if not isinstance(value, dict):
        return str(value), default_special, not default_special
    for flag in ("lstrip", "rstrip", "single_word"):
        if value.get(flag):
            raise UnsupportedCheckpoint(f"added token {value.get('content')!r} has {flag}=true")
    special = bool(value.get("special", default_special))
    # AddedToken's default: normalized unless special, judged before transformers marks named tokens special
    return str(value["content"]), special, bool(value.get("normalized", not value.get("special", False)))


# ---- text encoder -------------------------------------------------------------------------------------

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # transformers' QuickGELUActivation, verbatim
    "gelu": F.gelu,
}
IGNORED_KEYS = ("embeddings.position_ids",)  # a buffer some checkpoints carry; rebuilt from arange
CHECKPOINT_PREFIX = "text_model."  # transformers 4 wrote it; 5 does not
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ClipTextConfig:
    """The fields of transformers' CLIPTextConfig that the text transformer uses (its defaults too)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    pad_token_id: int | None = 1

    @classmethod
    def from_file(cls, path: Path) -> ClipTextConfig:
        """config.json of a `text_encoder/` folder; UnsupportedCheckpoint for what is not a plain CLIPTextModel."""
        raw = _read_json(path) if path.is_file() else None
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path}: missing or not a JSON object (a text_encoder folder holds config.json)")
        if raw.get("model_type", "clip_text_model") != "clip_text_model":
            raise UnsupportedCheckpoint(f"{path}: model_type {raw.get('model_type')!r} (expected clip_text_model)")
        values = {f.name: raw[f.name] for f in fields(cls) if raw.get(f.name) is not None}
        config = cls(**values)
        if config.hidden_act not in ACTIVATIONS:
            raise UnsupportedCheckpoint(f"{path}: hidden_act {config.hidden_act!r}")
        if config.hidden_size % config.num_attention_heads:
            raise ModelLoadError(f"{path}: hidden_size {config.hidden_size} is not a multiple of "
                                 f"num_attention_heads {config.num_attention_heads}")
        return config


@dataclass
class TextEncoderOutput:
    last_hidden_state: torch.Tensor  # (B, L, D), after the final layer norm


def _uninitialised_embedding(rows: int, width: int) -> nn.Embedding:
    """An nn.Embedding whose weights `from_folder` assigns (random initialisation would only be overwritten)."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class _Embeddings(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = _uninitialised_embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = _uninitialised_embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class _Attention(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_attention_heads
        self.scale = (width // self.heads) ** -0.5
        self.q_proj, self.k_proj = Linear(width, width), Linear(width, width)
        self.v_proj, self.out_proj = Linear(width, width), Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                             is_causal=length > 1, scale=self.scale)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class _Mlp(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[config.hidden_act]
        self.fc1 = Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class _EncoderLayer(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(config)
        self.layer_norm1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = _Mlp(config)
        self.layer_norm2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.num_hidden_layers))


class ClipTextEncoder(nn.Module):
    """CLIP's text transformer (transformers `CLIPTextModel`), inference only: causal self-attention,
    no padding mask (as Stable Diffusion uses it). Parameter names are transformers 5's, so the
    state_dict is the same as the transformers module's."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    @classmethod
    def from_folder(cls, path: str | Path, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> ClipTextEncoder:
        """A `text_encoder/` folder (config.json + model.safetensors), loaded strictly, in eval mode."""
        folder = Path(path)
        config = ClipTextConfig.from_file(folder / "config.json")
        model = cls(config)  # uninitialised layers (engine/native/uninitialised.py): the file's tensors follow
        path = folder / WEIGHTS_FILE
        state = {}
        for key, tensor in read_tensors(path).items():
            name = key.removeprefix(CHECKPOINT_PREFIX)
            if name not in IGNORED_KEYS:
                state[name] = tensor
        load_strict(model, state, path)
        return model.to(device=device, dtype=dtype).eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.final_layer_norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.final_layer_norm.weight.device

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, table: nn.Module) -> None:
        """Replace the token table (training splices learned vectors in front of it)."""
        self.embeddings.token_embedding = table  # type: ignore[assignment]

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Grow (or cut) the token table in place, keeping its `requires_grad`; new rows are the mean of the
        old ones. transformers samples them from N(mean, 1e-9·covariance), i.e. the mean to within
        rounding; callers overwrite them anyway."""
        table = self.embeddings.token_embedding
        old = table.weight
        keep = min(old.shape[0], new_num_tokens)
        grown = torch.empty(new_num_tokens, old.shape[1], dtype=old.dtype, device=old.device)
        with torch.no_grad():
            grown[:keep] = old[:keep]
            grown[keep:] = old.float().mean(dim=0).to(old.dtype)
        table.weight = nn.Parameter(grown, requires_grad=old.requires_grad)
        table.num_embeddings = new_num_tokens
        self.config.vocab_size = new_num_tokens
        return table

    def forward(self, input_ids: torch.Tensor) -> TextEncoderOutput:
        """`(B, L)` token ids, L ≤ max_position_embeddings → `last_hidden_state` `(B, L, D)`."""
        if input_ids.shape[-1] > self.config.max_position_embeddings:
            raise ValueError(f"{input_ids.shape[-1]} tokens; the text encoder takes at most "
                             f"{self.config.max_position_embeddings}")
        hidden = self.embeddings(input_ids.reshape(-1, input_ids.shape[-1]))
        for layer in self.encoder.layers:
            hidden = layer(hidden)
        return TextEncoderOutput(self.final_layer_norm(hidden))
