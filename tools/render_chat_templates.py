#!/usr/bin/env python3
"""Render the chat templates of the corpus models (vocab/hf/*/tokenizer_config.json) with jinja2 for one
fixed two-turn conversation and write them to tests/fixtures/chat_templates/NAME.txt: the reference that
test_qa_prompt compares sparsedoc's prompt layouts (app/chat_template.c) against, decoded to text.

A test-time reference only, never part of the product. Needs python3-jinja2 and the shared corpus:
    python3 tools/render_chat_templates.py [CORPUS_DIR]     (default ../shared/corpus)

The conversation is the one app/chat_template.c builds: the system prompt, one user turn holding the documents
and the first question, an answer, a second question, and the generation prompt. DeepSeek-V3.2 has no jinja
template in the corpus (its tokenizer_config.json is DeepSeek-V3's); V3.2 chats in non-thinking mode open every
assistant turn with "<｜Assistant｜></think>" (the V3.1/V3.2 model cards), so that one string is added to the
V3 rendering. Keep SYSTEM and the turns below equal to test_qa_prompt.c and app/chat_template.c."""
import json
import os
import sys

import jinja2

SYSTEM = ("Answer the question from the documents below. Cite the source of every fact with its marker exactly as "
          "it appears in the documents, for example [p. 12] or [src/main.c:88]. If the documents do not contain the "
          "answer, say so.")
CONTEXT = "[p. 3] The Brenlow vault opens with code KX-4821.\n[p. 4] Harbor fees rose in 1998."
Q1, A1, Q2 = "What opens the vault?", "KX-4821 [p. 3]", "And the fees?"


def token_text(t):
    return t["content"] if isinstance(t, dict) else t


def render(cfg):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    msgs = [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Documents:\n\n" + CONTEXT + "\nQuestion: " + Q1},
            {"role": "assistant", "content": A1},
            {"role": "user", "content": Q2}]
    return env.from_string(cfg["chat_template"]).render(
        messages=msgs, add_generation_prompt=True, bos_token=token_text(cfg.get("bos_token") or ""),
        eos_token=token_text(cfg.get("eos_token") or ""))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "corpus")
    out_dir = os.path.join(here, "..", "tests", "fixtures", "chat_templates")
    os.makedirs(out_dir, exist_ok=True)
    for name in ("deepseek-v3", "llama3"):
        with open(os.path.join(corpus, "vocab", "hf", name, "tokenizer_config.json"), encoding="utf-8") as f:
            text = render(json.load(f))
        if name == "deepseek-v3":
            text = text.replace("<｜Assistant｜>", "<｜Assistant｜></think>")
        with open(os.path.join(out_dir, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{name}: {len(text)} characters")


if __name__ == "__main__":
    main()
