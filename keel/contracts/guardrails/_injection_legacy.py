# ruff: noqa: E501  (one line a rule: needles as they were)
"""The injection check's needles as they were before ``keel-guardrail-needles-2``.

A run recorded before that patch replays with them: its agent nodes must reach the verdicts
they ran with, or the replay would take another path than its history (a call that went to
the model, denied now) and fail. Each entry is keyed by the first 16 hex digits of the
sha256 of its rule's pattern (the patterns did not change), so the table survives rules
moving about; a rule it does not name had the needles it has now.

Before the patch, a line break inside a two-word needle hid it ("pay no" and "attention"
on two lines) and letters one a line were not read as spaced apart; 18 rules had
alternatives no needle held.
"""

from __future__ import annotations

LEGACY_NEEDLES: dict[str, str] = {
    "7b19981a266fd631": "abandon|aside|bypass|discard|disregard|drop|follow|forget|forgo|ignor|let go|mind|neglect|no attention|no heed|notice|obey|overr|scrap|skip|throw",  # ignore-instructions (latin)
    "6e8b506a0ffff753": "abandon|aside|bypass|discard|disregard|drop|follow|forget|forgo|ignor|let go|mind|neglect|no attention|no heed|notice|obey|overr|scrap|skip|throw",  # ignore-instructions (latin)
    "c653bdd0b461ec14": "abandon|aside|bypass|discard|disregard|drop|follow|forget|forgo|ignor|let go|mind|neglect|no attention|no heed|notice|obey|overr|scrap|skip|throw",  # ignore-instructions (latin)
    "19c1422ecdaa5c5f": "directive|guidance|guideline|instruction|prompt|rule",  # ignore-instructions (latin)
    "7368d00990dbfaa6": "directive|instruction|order|prompt|rule|task",  # ignore-instructions (latin)
    "ba0bb11700ab256b": "ai|assistant|automated|bot|chatbot|llm|model",  # role-override (latin)
    "cb0479d63aa28ddd": "above|repeat|words",  # reveal-instructions (latin)
    "1a5acc2957993535": "as |play|role|without",  # role-play-jailbreak (latin)
    "ca8fd4248932b1f7": "admin|assistant|developer|human|sys>|sys]|system|user",  # role-header (plain)
    "665e72d1c4cf5e66": "caso omiso|descart|ignor|olvid|omit|salta",  # ignore-instructions (latin)
    "91b476a516af7e76": "instruccion|mensaje|prompt",  # reveal-instructions (latin)
    "b6fed44b47ecf0d5": "fais abstraction|faites abstraction|ignor|neglig|oubli|tenez pas|tiens pas",  # ignore-instructions (latin)
    "ee9dd44c3eeb9b00": "consigne|instruction|prompt",  # reveal-instructions (latin)
    "4b0369ad3ed39be8": "ignorier|missacht|uberg|vergessen|vergiss",  # ignore-instructions (latin)
    "7e41d49a1699404b": "ab jetzt|ab sofort|du bist|sie sind",  # role-override (latin)
    "7e8c3161702cc23f": "anweisungen|system-prompt|systemanweisung|systemprompt",  # reveal-instructions (latin)
    "68c25aab4d3449cb": "istruzioni|prompt",  # reveal-instructions (latin)
    "a692b013fd696af1": "instruc|mensagem|prompt",  # reveal-instructions (latin)
    "edea992cfe426f17": "ben je|ben jij|bent nu",  # role-override (latin)
    "4d2377c5133a58a0": "instructies|systeem",  # reveal-instructions (latin)
    "e43f6c7974cba843": "指令|提示|系統|系统",  # reveal-instructions (plain)
    "d12b63ce898d84f2": "システム|プロンプト|指示",  # reveal-instructions (plain)
    "30dda93c1af2efaf": "الأصلية|السرية|المخفية|النظام",  # reveal-instructions (plain)
}  # fmt: skip
