#!/usr/bin/env python3
"""Generate the tiny test model (see ../shared/runtimes.md) into OUTDIR.

Usage: gen_tiny_model.py OUTDIR   (uses <repo>/.venv from setup.sh when it exists)

TINY_MODEL_SHAPE=wide makes the same model wider (4 layers, width 256, head size 64, context
8192), the smallest shape vLLM's CPU backend serves (its attention wants head size 64).

Writes, deterministically and in well under a second:
  OUTDIR/tiny.gguf    for llama.cpp (llama-cpp-python)
  OUTDIR/tiny-hf/     Hugging Face folder for mlx_lm
Both hold the same Llama-architecture model with random float32 weights (fixed seed) and
the same byte-level BPE tokenizer, ChatML template and `<|im_end|>` end-of-sequence, so the
two runtimes give the same greedy text for the same prompt.

The output rows of special and non-printable tokens are zero, and every other row carries a
large positive weight on hidden dimension 0, which no layer writes to (so the residual
stream keeps the embedding's constant 1 there). Printable tokens thus always out-score the
zeroed ones by a wide margin: every reply is printable ASCII (no newlines) and, as the
end-of-sequence token is never chosen, runs to max_tokens (finish_reason "length"),
whatever the sampling settings.
"""
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

SHAPES = {"small": (2, 64, 4, 128, 256), "wide": (4, 256, 4, 768, 8192)}
SHAPE = os.environ.get("TINY_MODEL_SHAPE", "small")
if SHAPE not in SHAPES:
    sys.exit(f"TINY_MODEL_SHAPE={SHAPE}: use one of {', '.join(SHAPES)}")
# Bump nothing by hand: the stamp is this file's own hash (and the shape), so any edit
# regenerates.
SCRIPT_HASH = hashlib.sha256(Path(__file__).read_bytes() + SHAPE.encode()).hexdigest()[:16]

SEED = 20261126
N_LAYER, N_EMBD, N_HEAD, N_FF, N_CTX = SHAPES[SHAPE]
N_VOCAB = 512
RMS_EPS, ROPE_THETA = 1e-5, 10000.0
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Training text for the tokenizer: enough distinct words for 253 merges.
CORPUS = """\
A switchyard is the part of a railway where trains are taken apart and put together again.
Cars arrive from many lines, each bound for a different town, and the yard sorts them onto
the right tracks so that every outgoing train carries exactly what its route needs.
The yardmaster watches the whole picture: which tracks are full, which engines are free,
and which departures are due soon. A good yardmaster never lets one busy track block the
others, and always keeps a spare path open for the urgent freight that nobody planned for.

Routing requests between machines works in much the same way. Each request has a model it
wants, a size, a deadline and sometimes a budget. Each machine has memory, a queue of work
already waiting, a temperature and a price per hour. The router reads the current state of
every node, applies the policies its operators wrote, and then sends the request to the
node most likely to answer quickly, cheaply and correctly.

Policies are small programs. One might reject any request larger than a limit; another
might prefer the machine with the shortest queue; a third might send private data only to
nodes inside the building. Because policies run in a sandbox, a broken policy cannot crash
the router: it simply fails, the failure is logged, and the next policy in the chain decides.

When a node goes quiet, its heartbeats stop and the router marks it as unhealthy after a
short grace period. Requests that were waiting move to other nodes, and when the node comes
back it is warmed up gently before it receives its full share of traffic again. Operators
can read all of this on a dashboard: tokens per second, queue depth, errors and latency.
"""


def byte_decoder():
    """GPT-2's byte-level map, reversed: printable stand-in character -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=N_VOCAB, min_frequency=1, show_progress=False, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS.split("\n\n"), trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    assert len(vocab) == N_VOCAB, f"tokenizer has {len(vocab)} tokens, want {N_VOCAB}"
    assert [vocab[s] for s in SPECIALS] == [0, 1, 2], "special tokens must be ids 0..2"
    # Newer tokenizers store merges as pairs; llama.cpp wants "a b" strings.
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    return spec, tokens, merges


def make_weights(tokens):
    """HF-layout float32 weights (out_features, in_features), fixed seed."""
    import numpy as np

    rng = np.random.default_rng(SEED)

    def rand(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"model.embed_tokens.weight": rand(N_VOCAB, N_EMBD, scale=1.0)}
    w["model.embed_tokens.weight"][:, 0] = 1.0  # constant dimension, see module docstring
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(N_EMBD, np.float32)
        for name in ("q", "k", "v", "o"):
            w[p + f"self_attn.{name}_proj.weight"] = rand(N_EMBD, N_EMBD, scale=N_EMBD**-0.5)
        w[p + "mlp.gate_proj.weight"] = rand(N_FF, N_EMBD, scale=N_EMBD**-0.5)
        w[p + "mlp.up_proj.weight"] = rand(N_FF, N_EMBD, scale=N_EMBD**-0.5)
        w[p + "mlp.down_proj.weight"] = rand(N_EMBD, N_FF, scale=N_FF**-0.5)
        # No layer writes hidden dimension 0, so it stays 1 in the residual stream.
        w[p + "self_attn.o_proj.weight"][0, :] = 0.0
        w[p + "mlp.down_proj.weight"][0, :] = 0.0
    w["model.norm.weight"] = np.ones(N_EMBD, np.float32)

    head = rand(N_VOCAB, N_EMBD, scale=0.5)
    head[:, 0] = 100.0  # same large bonus for every kept token: argmax among them unchanged
    bd = byte_decoder()
    for i, t in enumerate(tokens):
        if i < len(SPECIALS) or not all(32 <= bd[c] <= 126 for c in t):
            head[i, :] = 0.0  # special or non-printable: never chosen
    w["lm_head.weight"] = head
    return w


def permute(x, n_head):
    """HF q/k rows -> llama.cpp's rotary layout (convert_hf_to_gguf.py LlamaModel.permute)."""
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def write_gguf(path, weights, tokens, merges):
    import gguf

    g = gguf.GGUFWriter(str(path), arch="llama")
    g.add_name("switchyard-tiny")
    g.add_context_length(N_CTX)
    g.add_embedding_length(N_EMBD)
    g.add_block_count(N_LAYER)
    g.add_feed_forward_length(N_FF)
    g.add_head_count(N_HEAD)
    g.add_head_count_kv(N_HEAD)
    g.add_rope_dimension_count(N_EMBD // N_HEAD)
    g.add_rope_freq_base(ROPE_THETA)
    g.add_layer_norm_rms_eps(RMS_EPS)
    g.add_vocab_size(N_VOCAB)
    g.add_file_type(gguf.LlamaFileType.ALL_F32)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("gpt-2")
    g.add_token_list(tokens)
    g.add_token_types([gguf.TokenType.CONTROL if i < len(SPECIALS) else gguf.TokenType.NORMAL
                       for i in range(len(tokens))])
    g.add_token_merges(merges)
    g.add_bos_token_id(0)
    g.add_eos_token_id(2)
    g.add_pad_token_id(0)
    g.add_add_bos_token(False)
    g.add_chat_template(CHAT_TEMPLATE)

    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    g.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(N_LAYER):
        for hf, gg in names.items():
            x = weights[f"model.layers.{i}.{hf}.weight"]
            if gg in ("attn_q", "attn_k"):
                x = permute(x, N_HEAD)
            g.add_tensor(f"blk.{i}.{gg}.weight", x)
    g.add_tensor("output_norm.weight", weights["model.norm.weight"])
    g.add_tensor("output.weight", weights["lm_head.weight"])
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def write_hf(d, weights, spec):
    from safetensors.numpy import save_file

    d.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(d / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
        "hidden_size": N_EMBD, "intermediate_size": N_FF, "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD, "num_key_value_heads": N_HEAD,
        "head_dim": N_EMBD // N_HEAD, "max_position_embeddings": N_CTX,
        "rms_norm_eps": RMS_EPS, "rope_theta": ROPE_THETA, "vocab_size": N_VOCAB,
        "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 0,
    }
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "unk_token": None, "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "model_max_length": N_CTX,
        "added_tokens_decoder": {str(i): {"content": s, "special": True, "lstrip": False,
                                          "rstrip": False, "normalized": False,
                                          "single_word": False}
                                 for i, s in enumerate(SPECIALS)},
    }
    files = {
        "config.json": config,
        "generation_config.json": {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 0},
        "tokenizer.json": spec,
        "tokenizer_config.json": tok_config,
        "special_tokens_map.json": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    }
    for name, obj in files.items():
        (d / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_tiny_model.py OUTDIR")
    out = Path(sys.argv[1])
    stamp, gguf_path, hf_dir = out / "tiny-model.stamp", out / "tiny.gguf", out / "tiny-hf"
    if (stamp.is_file() and stamp.read_text().strip() == SCRIPT_HASH and gguf_path.is_file()
            and (hf_dir / "model.safetensors").is_file()):
        print(f"tiny model already in {out} (version {SCRIPT_HASH})")
        return
    # Run from a plain python3 (e.g. through the shebang): switch to the venv setup.sh made.
    venv = Path(__file__).resolve().parents[2] / ".venv"
    if (venv / "bin/python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin/python", [str(venv / "bin/python"), __file__, *sys.argv[1:]])
    out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    shutil.rmtree(hf_dir, ignore_errors=True)

    spec, tokens, merges = train_tokenizer()
    weights = make_weights(tokens)
    tmp = out / "tiny.gguf.tmp"
    write_gguf(tmp, weights, tokens, merges)
    os.replace(tmp, gguf_path)
    write_hf(hf_dir, weights, spec)
    stamp.write_text(SCRIPT_HASH + "\n")  # last: marks both outputs complete
    print(f"wrote {gguf_path} and {hf_dir}/ (version {SCRIPT_HASH})")


if __name__ == "__main__":
    main()
