#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/refs.json: reference ids and texts for the Rust tokenizers.

* sentencepiece (the C++ library's Python package) on the real InternLM2 `tokenizer.model` and on
  the real LLaMA vocabulary (llama.cpp's ggml-vocab-llama-spm.gguf rebuilt as a ModelProto:
  BPE, byte_fallback, identity normaliser, add_dummy_prefix=True, remove_extra_whitespaces=False);
* transformers' slow LlamaTokenizer (legacy) on the internvl_chat_llama and internvl_c_g fixture
  folders: `tokenizer(text).input_ids` and `decode(ids, skip_special_tokens=...)`.

Run once in a throw-away virtual environment (the output is committed):

    python3 -m venv /tmp/spvenv
    /tmp/spvenv/bin/pip install sentencepiece==0.2.3 protobuf gguf==0.19.0 transformers==4.37.2
    /tmp/spvenv/bin/python scripts/gen_tokenizer_refs.py

sentencepiece 0.2.3 is the version of the official InternVL reference fixtures. Keep it: 0.2.3
maps a raw "\\0" piece (InternLM2 has one at id 354) to UNUSED, so a NUL in the text encodes as
<0x00>, where older versions gave 354. (The committed refs: sentencepiece 0.2.3, protobuf 7.36.2,
gguf 0.19.0, transformers 4.37.2.)
"""

import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TOKENIZERS = FIXTURES / "tokenizers"

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello  world",
    "   leading spaces",
    "trailing spaces   ",
    "  both  ",
    "line1\nline2\n\nline3\n",
    "tab\tseparated\tvalues",
    "\t\n \t",
    "mixed \n spaces \t here",
    "1234567890",
    "3.14159 and 2,718",
    "2024-05-09 12:34:56",
    "你好，世界！",
    "中文和English混合",
    "一张熊猫的照片",
    "上海人工智能实验室",
    "emoji 🦙🤖👨‍👩‍👧 ok",
    "🙂",
    "日本語のテキスト",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "Ünïcödé àccents",
    "rare 𠀀𠀁 chars",
    "a\u0000b",
    "▁already▁escaped",
    "<s> and </s> and <unk> as text",
    "<0x41>",
    "\u3000ideographic space",
    "non\u00a0breaking",
    "ＡＢＣ full width ａｂｃ",
    "——……",
    "",
    " ",
    "   ",
    "\n",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "supercalifragilisticexpialidocious",
    "don't won't I'm e.g. U.S.A.",
]

HF_TEXTS = [
    "<|im_start|>system\nHi there<|im_end|><|im_start|>user\nHello<|im_end|>",
    " <img> x </img> ",
    "<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat?",
    "a<s>b</s>c",
    "<unk>",
    "text with <|im_end|>\n trailing ",
    "summarize:a photo of a cat",
    "English caption:",
    "你好<|im_end|>世界",
    "<ref>dog</ref><box>[[1, 2, 3, 4]]</box>",
    "",
    "[PAD] padded [PAD]",
]


def versions():
    names = ["sentencepiece", "protobuf", "gguf", "transformers"]
    return {name: importlib.metadata.version(name) for name in names}


def llama_spm_model_proto():
    """The llama.cpp LLaMA vocabulary as a sentencepiece ModelProto."""
    reader = gguf.GGUFReader(str(TOKENIZERS / "llama-spm" / "ggml-vocab-llama-spm.gguf"))
    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    model = pb.ModelProto()
    for token, score, kind in zip(tokens, scores, types):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = token, score, kind
    model.trainer_spec.model_type = pb.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = 0, 1, 2
    model.trainer_spec.pad_id = -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    return model.SerializeToString()


def decode_cases(sp):
    """Id sequences that exercise control, unknown and byte pieces and the dummy prefix."""
    byte = lambda b: sp.piece_to_id(f"<0x{b:02X}>")  # noqa: E731
    hello = sp.encode("Hello  world")
    sequences = [
        [sp.bos_id()] + hello + [sp.eos_id()],
        [sp.unk_id()],
        [sp.unk_id()] + hello,
        [byte(0xE4), byte(0xBD), byte(0xA0)] + hello,
        [byte(0xE4), byte(0xBD)] + hello,
        [byte(0x80), byte(0x41), byte(0xF0), byte(0x9F)],
        sp.encode("  two leading"),
        [sp.bos_id()] + sp.encode(" one leading"),
        [sp.piece_to_id("▁")] * 3,
        hello[1:],
    ]
    return [{"ids": ids, "text": sp.decode(ids)} for ids in sequences]


def sentencepiece_refs(sp, source):
    cases = []
    for text in TEXTS:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "pieces": sp.encode(text, out_type=str), "decoded": sp.decode(ids)})
    return {"model": source, "vocab_size": sp.get_piece_size(), "cases": cases, "decode_cases": decode_cases(sp)}


def transformers_refs(folder):
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(str(folder), legacy=True)
    encode = [{"text": text, "ids": tok(text).input_ids} for text in HF_TEXTS]
    sequences = [case["ids"] for case in encode if case["ids"]]
    sequences.append([tok.unk_token_id, tok.bos_token_id, 5, 6, 7, tok.eos_token_id])
    decode = []
    for ids in sequences:
        for skip in (False, True):
            decode.append({"ids": ids, "skip_special_tokens": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
    return {
        "folder": os.path.relpath(folder, TOKENIZERS),
        "class": type(tok).__name__,
        "len": len(tok),
        "special_ids": {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id, "pad": tok.pad_token_id},
        "encode": encode,
        "decode": decode,
    }


def main():
    internlm2 = spm.SentencePieceProcessor(model_file=str(TOKENIZERS / "internlm2" / "tokenizer.model"))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "llama-spm.model"
        path.write_bytes(llama_spm_model_proto())
        llama = spm.SentencePieceProcessor(model_file=str(path))
        refs = {
            "generator": "scripts/gen_tokenizer_refs.py",
            "versions": versions(),
            "sentencepiece": {
                "internlm2": sentencepiece_refs(internlm2, "internlm2/tokenizer.model"),
                "llama_spm": sentencepiece_refs(llama, "llama-spm/ggml-vocab-llama-spm.gguf rebuilt as a ModelProto"),
            },
            "transformers": {
                "internvl_chat_llama": transformers_refs(FIXTURES / "internvl_chat_llama" / "model"),
                "internvl_c_g": transformers_refs(FIXTURES / "internvl_c_g" / "model"),
            },
        }
    out = TOKENIZERS / "refs.json"
    out.write_text(json.dumps(refs, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
