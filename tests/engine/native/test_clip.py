"""The native CLIP tokenizer and text encoder give what transformers gives, and import neither
transformers nor diffusers."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genpromp_annotate.engine.native.clip import ClipTextEncoder, ClipTokenizer, UnsupportedCheckpoint
from genpromp_annotate.engine.prompts import TEMPLATES, prompt_ids
from genpromp_annotate.errors import ModelLoadError

IMAGENET = Path(__file__).parents[2] / "data" / "imagenet_synset_mapping.txt"
ODD_STRINGS = [
    "A PHOTO OF A Cat", "Hello, World!!!", "cat's", "it'll be, we'd say; they're here. I'M", "don't 'quote'",
    "café", "cafe\u0301", "naïve façade", "Ärger über Öl", "ΟΔΟΣ Σ", "İstanbul", "3.14159 and 42 and 2024",
    "  many   spaces  ", "tab\there\nnew\r\nline\x0bv\x0cf", "\x1cfile separator\x1f", "zero\u200bwidth",
    "non\u00a0breaking\u3000ideographic", "emoji 🐱🐶 👍🏽 🏳️‍🌈", "", "   ", "日本語のテキスト", "x'''s ''' 's",
    "hyphen-ated_under score", "$100 #tag @user <html> a|b", "<|endoftext|>x", "x<|startoftext|>y",
    "<|ENDOFTEXT|>", "<|ENDOFTEXT|>!", "(<|StartOfText|>)", "!<|endoftext|>!", "<|startoftext|><|endoftext|>", "q\u0301 ǅ ﬁ ①",
    " ".join(f"word{i}" for i in range(100)),
]
ADDED = ["<cub-17>", "<cat#1a2b3c4d>"]
WITH_ADDED = ["a photo of a <cub-17>", "a<cub-17>bird", "A <CUB-17>", "<cat#1a2b3c4d><cub-17>",
              "x  <cub-17>  y", "the <cat#1a2b3c4d>'s tail", "<cub-17>s", "<cub-1", "<|endoftext|><cub-17>"]


def _reference_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def _imagenet_texts() -> list[str]:
    """Every class string, every comma-separated synonym, and each synonym's last word."""
    texts = []
    for line in IMAGENET.read_text().splitlines():
        category = line.split(" ", 1)[1]
        texts.append(category)
        for synonym in category.split(","):
            texts += [synonym.strip(), synonym.strip().split(" ")[-1]]
    return texts


def _random_texts(count: int, seed: int = 0) -> list[str]:
    """Mixed scripts, digits, punctuation, contractions and whitespace: the splitter's corner cases."""
    pieces = list("abcXYZ019'!?.,-_<>|#é\u0301ßΣσ日本🐱 \t\n") + ["'s", "'LL", "<|endoftext|>", "<|EndOfText|>", "  ", "cat", "Ünï"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) for _ in range(count)]


def _template_texts() -> list[str]:
    return [t.format("goldfish") for t in TEMPLATES] + [part.strip() for t in TEMPLATES for part in t.split("{}")]


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    folder = tiny_model_dir / "tokenizer"
    return ClipTokenizer.from_folder(folder), _reference_tokenizer(folder)


def _mismatches(native, reference, texts, **kwargs) -> list[tuple[str, list[int], list[int]]]:
    out = []
    for text in texts:
        ours, theirs = native(text, **kwargs).input_ids, reference(text, **kwargs).input_ids
        if ours != theirs:
            out.append((text, ours, theirs))
    return out


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_the_tokenizer_encodes_like_transformers(tokenizers, add_special_tokens):
    native, reference = tokenizers
    texts = _imagenet_texts() + _template_texts() + ODD_STRINGS + _random_texts(1500)
    assert _mismatches(native, reference, texts, add_special_tokens=add_special_tokens)[:5] == []


def test_ids_and_tokens_convert_like_transformers(tokenizers):
    native, reference = tokenizers
    ids = sorted({i for text in _imagenet_texts() + ODD_STRINGS for i in reference(text).input_ids})
    tokens = reference.convert_ids_to_tokens(ids)
    assert native.convert_ids_to_tokens(ids) == tokens
    assert [native.convert_ids_to_tokens(i) for i in ids[:50]] == tokens[:50]
    probes = [*tokens, "cat", "cat</w>", "not-a-token", "<|endoftext|>", ""]
    assert native.convert_tokens_to_ids(probes) == reference.convert_tokens_to_ids(probes)
    assert native.convert_tokens_to_ids("not-a-token") == reference.convert_tokens_to_ids("not-a-token")
    assert native.convert_ids_to_tokens([len(reference) + 5]) == reference.convert_ids_to_tokens([len(reference) + 5])


def test_special_tokens_and_sizes_match(tokenizers):
    native, reference = tokenizers
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "model_max_length", "vocab_size"):
        assert getattr(native, name) == getattr(reference, name), name
    assert len(native) == len(reference) == 49408


def test_padding_truncation_and_batches_match(tokenizers):
    native, reference = tokenizers
    long_text = " ".join(["cat"] * 100)
    for kwargs in ({"padding": "max_length", "max_length": 77}, {"padding": "max_length", "max_length": 8},
                   {"truncation": True, "max_length": 6}, {"truncation": True},
                   {"truncation": "do_not_truncate", "max_length": 6}, {"truncation": "longest_first", "max_length": 6},
                   {"truncation": True, "padding": "max_length", "max_length": 10, "add_special_tokens": False}):
        for text in ("a photo of a goldfish", long_text, ""):
            ours, theirs = native(text, **kwargs), reference(text, **kwargs)
            assert (ours.input_ids, ours.attention_mask) == (theirs["input_ids"], theirs["attention_mask"]), kwargs
    batch = ["a cat", "a photo of a dog", ""]
    for padding in (False, True):
        assert native(batch, padding=padding)["input_ids"] == reference(batch, padding=padding)["input_ids"]


def test_added_tokens_behave_like_transformers(tiny_model_dir):
    native, reference = ClipTokenizer.from_folder(tiny_model_dir / "tokenizer"), _reference_tokenizer(
        tiny_model_dir / "tokenizer")
    assert native.add_tokens(ADDED) == reference.add_tokens(ADDED) == 2
    assert len(native) == len(reference) == 49410
    assert native.convert_tokens_to_ids(ADDED) == reference.convert_tokens_to_ids(ADDED) == [49408, 49409]
    assert native.convert_ids_to_tokens([49408, 49409]) == ADDED
    for kwargs in ({}, {"add_special_tokens": False}):
        assert _mismatches(native, reference, WITH_ADDED + ODD_STRINGS[:10], **kwargs) == []
    # again (nothing new), a vocabulary entry (no new id but matched whole from now on), a special token
    for tokens, special in ((ADDED, False), (["cat</w>", "<new>", "<new>"], False), (["<Sp>"], True)):
        assert native.add_tokens(tokens, special_tokens=special) == reference.add_tokens(tokens, special_tokens=special)
    assert len(native) == len(reference)
    texts = ["a cat</w> <new>", "x<Sp>y <sp> <NEW>", "<cub-17><new>"]
    assert _mismatches(native, reference, texts, add_special_tokens=False) == []


def _sd15_style_configs(folder: Path) -> None:
    """tokenizer_config.json / special_tokens_map.json as the SD v1.5 repository has them (AddedToken dicts)."""
    def added(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    special = {"bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"),
               "pad_token": "<|endoftext|>", "unk_token": added("<|endoftext|>")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
              "name_or_path": "openai/clip-vit-large-patch14", "special_tokens_map_file": "./special_tokens_map.json",
              "tokenizer_class": "CLIPTokenizer",
              **{k: ({"__type": "AddedToken", **v} if isinstance(v, dict) else v) for k, v in special.items()}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _legacy_added_tokens(folder: Path) -> None:
    (folder / "added_tokens.json").write_text(json.dumps({"<Legacy-Tok>": 49408, "<z>": 49409}))


def _added_tokens_decoder(folder: Path) -> None:
    config = json.loads((folder / "tokenizer_config.json").read_text())

    def token(content: str, special: bool, normalized: bool) -> dict:
        return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
                "single_word": False, "special": special}

    config["added_tokens_decoder"] = {"49406": token("<|startoftext|>", True, True),
                                      "49407": token("<|endoftext|>", True, False),
                                      "49408": token("<Dec-Tok>", False, True), "49409": token("<raw>", False, False)}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _saved_by_transformers(folder: Path) -> None:
    """What transformers 5 `save_pretrained` writes: tokenizer.json + tokenizer_config.json only."""
    reference = _reference_tokenizer(folder)
    reference.add_tokens(["<cub-17>", "<Cat#1>"])
    for child in folder.iterdir():
        child.unlink()
    reference.save_pretrained(str(folder))


@pytest.mark.parametrize("variant", [_sd15_style_configs, _legacy_added_tokens, _added_tokens_decoder,
                                     _saved_by_transformers])
def test_other_tokenizer_folder_layouts_load_like_transformers(variant, tiny_model_dir, tmp_path):
    folder = tmp_path / "tokenizer"
    shutil.copytree(tiny_model_dir / "tokenizer", folder)
    variant(folder)
    native, reference = ClipTokenizer.from_folder(folder), _reference_tokenizer(folder)
    assert len(native) == len(reference)
    texts = ["<|STARTOFTEXT|> a", "a<|startoftext|>b", "<|ENDOFTEXT|>", "<legacy-tok> x <Legacy-Tok>", "<z>",
             "<dec-tok><Dec-Tok>", "<RAW> <raw>", "a <CUB-17> <cat#1>", *WITH_ADDED, *_template_texts()]
    for kwargs in ({}, {"add_special_tokens": False}):
        assert _mismatches(native, reference, texts, **kwargs) == []
    assert native.pad_token_id == reference.pad_token_id and native.model_max_length == reference.model_max_length


def test_the_vocabulary_loads_fast(tiny_model_dir):
    ClipTokenizer.from_folder(tiny_model_dir / "tokenizer")  # files in the page cache
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        ClipTokenizer.from_folder(tiny_model_dir / "tokenizer")
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.5  # about 0.09 s on an idle core; transformers takes about 0.07 s


@pytest.mark.parametrize(("remove", "corrupt"), [("merges.txt", None), ("vocab.json", None), (None, "vocab.json"),
                                                  (None, "merges.txt"), (None, "added_tokens.json")])
def test_an_unreadable_tokenizer_folder_names_the_file(tiny_model_dir, tmp_path, remove, corrupt):
    folder = tmp_path / "tokenizer"
    shutil.copytree(tiny_model_dir / "tokenizer", folder)
    if remove:
        (folder / remove).unlink()
    if corrupt == "vocab.json":
        (folder / corrupt).write_text("{not json")
    elif corrupt == "added_tokens.json":
        (folder / corrupt).write_text('["a list"]')
    elif corrupt:
        (folder / corrupt).write_text("#version: 0.2\na b c\n")
    with pytest.raises(ModelLoadError, match=(remove or corrupt).replace(".", r"\.")):
        ClipTokenizer.from_folder(folder)


def test_a_tokenizer_that_is_not_clip_is_unsupported(tiny_model_dir, tmp_path):
    folder = tmp_path / "tokenizer"
    shutil.copytree(tiny_model_dir / "tokenizer", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "T5Tokenizer"}))
    with pytest.raises(UnsupportedCheckpoint, match="tokenizer_class 'T5Tokenizer'"):
        ClipTokenizer.from_folder(folder)


# ---- text encoder ---------------------------------------------------------------------------------------

def _reference_encoder(folder: Path, dtype: torch.dtype = torch.float32):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(str(folder), dtype=dtype).eval()


def _prompt_batch(tokenizer, token_ids) -> torch.Tensor:
    return torch.tensor([prompt_ids(tokenizer, t, template)[0] for t in token_ids for template in TEMPLATES])


@torch.no_grad()
def _max_diff(native, reference, ids: torch.Tensor) -> float:
    ours = native(input_ids=ids).last_hidden_state
    theirs = reference(input_ids=ids).last_hidden_state
    assert ours.shape == theirs.shape == (*ids.shape, reference.config.hidden_size)
    return float((ours.float() - theirs.float()).abs().max())


def test_the_text_encoder_matches_transformers_on_the_engines_prompts(tiny_model_dir, tokenizers):
    tokenizer = tokenizers[0]
    native = ClipTextEncoder.from_folder(tiny_model_dir / "text_encoder")
    reference = _reference_encoder(tiny_model_dir / "text_encoder")
    goldfish = tokenizer("goldfish", add_special_tokens=False).input_ids
    ids = _prompt_batch(tokenizer, [*goldfish, tokenizer.convert_tokens_to_ids("ch</w>"), 320])
    assert _max_diff(native, reference, ids) <= 1e-5
    assert _max_diff(native, reference, ids[:1, :5]) <= 1e-5  # shorter sequences too (causal mask)
    assert native.state_dict().keys() == reference.state_dict().keys()
    assert native.config.hidden_size == reference.config.hidden_size == 32
    assert native.config.num_hidden_layers == 2 and native.config.vocab_size == 49408
    assert native.config.max_position_embeddings == 77
    assert native.dtype == torch.float32 and native.device == torch.device("cpu") and not native.training


@pytest.fixture(scope="module")
def sd_sized_text_encoder(tmp_path_factory) -> Path:
    """SD v1's text-encoder widths (768, 12 heads, 3072) with 2 layers, random weights, saved by transformers."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=2,
                            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
    folder = tmp_path_factory.mktemp("sd-text-encoder")
    CLIPTextModel(config).save_pretrained(str(folder))
    return folder


def test_an_sd_sized_text_encoder_matches_transformers_and_bf16_stays_close(sd_sized_text_encoder, tokenizers):
    ids = _prompt_batch(tokenizers[0], [2368, 40293])
    native = ClipTextEncoder.from_folder(sd_sized_text_encoder)
    assert _max_diff(native, _reference_encoder(sd_sized_text_encoder), ids) <= 1e-4
    half = ClipTextEncoder.from_folder(sd_sized_text_encoder, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    with torch.no_grad():
        full, low = native(ids).last_hidden_state, half(ids).last_hidden_state.float()
    assert float((full - low).abs().max()) <= 0.15  # about 0.04, for values up to about 5
    assert float(torch.nn.functional.cosine_similarity(full.flatten(1), low.flatten(1)).min()) > 0.999
    assert _max_diff(half, _reference_encoder(sd_sized_text_encoder, torch.bfloat16), ids) <= 0.05


def _text_encoder_copy(tiny_model_dir: Path, tmp_path: Path, **config_changes) -> Path:
    folder = tmp_path / "text_encoder"
    shutil.copytree(tiny_model_dir / "text_encoder", folder)
    if config_changes:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def test_gelu_and_a_layer_norm_eps_are_honoured(tiny_model_dir, tmp_path, tokenizers):
    folder = _text_encoder_copy(tiny_model_dir, tmp_path, hidden_act="gelu", layer_norm_eps=1e-3)
    ids = _prompt_batch(tokenizers[0], [2368])
    assert _max_diff(ClipTextEncoder.from_folder(folder), _reference_encoder(folder), ids) <= 1e-5


def test_a_transformers_4_checkpoint_with_the_text_model_prefix_loads(tiny_model_dir, tmp_path):
    folder = _text_encoder_copy(tiny_model_dir, tmp_path)
    state = {f"text_model.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # the buffer SD v1.5 files carry
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    plain = ClipTextEncoder.from_folder(tiny_model_dir / "text_encoder").state_dict()
    prefixed = ClipTextEncoder.from_folder(folder).state_dict()
    assert plain.keys() == prefixed.keys() and all(torch.equal(plain[k], prefixed[k]) for k in plain)


def test_resized_embeddings_encode_like_transformers(tiny_model_dir, tokenizers):
    native = ClipTextEncoder.from_folder(tiny_model_dir / "text_encoder").requires_grad_(False)
    reference = _reference_encoder(tiny_model_dir / "text_encoder").requires_grad_(False)
    table = native.get_input_embeddings()
    old_rows = table.weight.clone()
    vector = torch.randn(32, generator=torch.Generator().manual_seed(1))
    for model in (native, reference):
        model.resize_token_embeddings(49410)
        with torch.no_grad():
            model.get_input_embeddings().weight[49409] = vector
    assert native.get_input_embeddings() is table and table.weight.shape == (49410, 32)
    assert native.config.vocab_size == 49410 and not table.weight.requires_grad
    assert torch.equal(table.weight[:49408], old_rows)
    # a fresh row: the mean of the old rows; transformers samples it within 1e-9·covariance of that mean
    torch.testing.assert_close(table.weight[49408], reference.get_input_embeddings().weight[49408],
                               atol=1e-3, rtol=0)
    ids = _prompt_batch(tokenizers[0], [49409])
    assert _max_diff(native, reference, ids) <= 1e-5


def test_a_relu_text_encoder_is_unsupported(tiny_model_dir, tmp_path):
    folder = _text_encoder_copy(tiny_model_dir, tmp_path, hidden_act="relu")
    with pytest.raises(UnsupportedCheckpoint, match="hidden_act 'relu'"):
        ClipTextEncoder.from_folder(folder)
    with pytest.raises(ValueError):  # callers that know nothing of the class can catch ValueError
        ClipTextEncoder.from_folder(folder)


def test_a_full_clip_config_is_unsupported(tiny_model_dir, tmp_path):
    folder = _text_encoder_copy(tiny_model_dir, tmp_path, model_type="clip")
    with pytest.raises(UnsupportedCheckpoint, match="model_type 'clip'"):
        ClipTextEncoder.from_folder(folder)


def test_weights_are_loaded_strictly(tiny_model_dir, tmp_path):
    folder = _text_encoder_copy(tiny_model_dir, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    save_file({**state, "text_projection.weight": torch.zeros(32, 32)}, str(folder / "model.safetensors"))
    with pytest.raises(UnsupportedCheckpoint, match="unexpected weights text_projection.weight"):
        ClipTextEncoder.from_folder(folder)
    save_file({k: v for k, v in state.items() if k != "final_layer_norm.bias"}, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing 1 weights, e.g. final_layer_norm.bias"):
        ClipTextEncoder.from_folder(folder)
    save_file({**state, "final_layer_norm.bias": torch.zeros(16)}, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"final_layer_norm.bias has shape \(16,\)"):
        ClipTextEncoder.from_folder(folder)


def test_missing_or_pickled_weights(tiny_model_dir, tmp_path):
    folder = _text_encoder_copy(tiny_model_dir, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(UnsupportedCheckpoint, match=r"pytorch_model\.bin"):
        ClipTextEncoder.from_folder(folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: missing"):
        ClipTextEncoder.from_folder(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: cannot read"):
        ClipTextEncoder.from_folder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        ClipTextEncoder.from_folder(folder)


def test_the_module_imports_neither_transformers_nor_diffusers(tiny_model_dir):
    script = (
        "import sys, torch\n"
        "from genpromp_annotate.engine.native.clip import ClipTextEncoder, ClipTokenizer\n"
        f"folder = {str(tiny_model_dir)!r}\n"
        "tok = ClipTokenizer.from_folder(folder + '/tokenizer')\n"
        "encoder = ClipTextEncoder.from_folder(folder + '/text_encoder')\n"
        "ids = tok('a photo of a cat', padding='max_length', max_length=77).input_ids\n"
        "hidden = encoder(input_ids=torch.tensor([ids])).last_hidden_state\n"
        "assert hidden.shape == (1, 77, 32), hidden.shape\n"
        "assert 'transformers' not in sys.modules and 'diffusers' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('transformers', 'diffusers')))\n"
        "assert 'torch._dynamo' not in sys.modules  # about 2 s more to import\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
