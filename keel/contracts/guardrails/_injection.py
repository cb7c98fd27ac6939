# ruff: noqa: RUF001
"""The prompt-injection check on untrusted fields.

The text is normalised first (``_normalise.views``: NFKC, look-alikes, invisible
characters, accents, leetspeak, HTML entities and comments, URL-encoding, escapes, base64,
rot13, reversed and spaced-out text), then read by patterns in English, Spanish, French,
German, Italian, Portuguese, Dutch, Chinese, Japanese, Russian and Arabic. The untrusted
fields are read one by one and then all together (an instruction split across fields).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ahocorasick

from keel.contracts.guardrails._injection_legacy import LEGACY_NEEDLES
from keel.contracts.guardrails._models import GuardrailDecision, GuardrailState
from keel.contracts.guardrails._normalise import views
from keel.contracts.guardrails._pii import _join, scrub_text

Script = Literal["plain", "latin", "squashed", "any"]


@dataclass(frozen=True)
class _Rule:
    name: str
    script: Script
    needles: frozenset[str]
    """Substrings one of which the text must hold for the pattern to be tried (speed: a
    substring test is much cheaper than the pattern)."""
    pattern: re.Pattern[str]
    legacy_needles: frozenset[str]
    """The needles before ``keel-guardrail-needles-2`` (``_injection_legacy``), for runs
    recorded before it."""


def _rule(name: str, script: Script, needles: str, pattern: str) -> _Rule:
    current = frozenset(needles.split("|"))
    legacy = LEGACY_NEEDLES.get(hashlib.sha256(pattern.encode()).hexdigest()[:16])
    return _Rule(
        name,
        script,
        current,
        re.compile(pattern, re.MULTILINE),
        frozenset(legacy.split("|")) if legacy is not None else current,
    )


# --- English (and the shared vocabulary), read on the latin skeleton -----------------------

# Words that make "ignore ... rules" about the model's instructions rather than the
# customer's own (``ignore my previous email`` must pass).
_SCOPE = (
    r"(?:all|previous|prior|above|earlier|preceding|foregoing|former|system|original|"
    r"initial|developer|existing|given)"
)
_FILLER = r"(?:the|these|those|of|your|all|any|every|above|previous|prior|system)"
_RULES = (
    r"(?:instructions?|prompts?|directives?|commands?|programming|guidelines|guardrails|"
    r"rules|context|constraints|restrictions|directions|guidance)"
)
_AI = (
    r"(?:ai|assistant|chatbot|bot|model|llm|gpt|chatgpt|dan|jailbroken|unrestricted|"
    r"uncensored|unfiltered|unlocked|evil|admin|administrator|root|superuser|hacker)"
)
# Not after a negation: "the supplier shall not disregard any safety instructions".
_IGNORE = (
    r"(?<!not )(?<!never )(?<!n't )(?<!cannot )"
    r"(?:ignore|ignoring|disregard|disregarding|forget|bypass|override|"
    r"set\s+aside|put\s+aside|cast\s+aside|discard|abandon|drop|scrap|throw\s+out|skip|"
    r"stop\s+following|no\s+longer\s+follow|(?:do\s+not|don'?t|never)\s+(?:follow|obey)|"
    r"pay\s+no\s+(?:attention|heed)\s+to|take\s+no\s+notice\s+of|never\s*mind|"
    r"let\s+go\s+of|forgo|neglect)"
)
# Needles are what every match must hold, read with line breaks as spaces; two words are
# one space apart once the text is normalised. Common words ("follow", "notice", "mind")
# would have the patterns tried on most ordinary text: the phrases they occur in instead.
_IGNORE_NEEDLES = (
    "ignor|disregard|forget|bypass|overr|aside|discard|abandon|drop|scrap|throw|skip|"
    "stop follow|longer follow|t follow|never follow|t obey|never obey|no attention|"
    "no heed|no notice|nevermind|never mind|let go|forgo|neglect"
)
_EN: tuple[_Rule, ...] = (
    _rule(
        "ignore-instructions",
        "latin",
        _IGNORE_NEEDLES,
        rf"\b{_IGNORE}\s+(?:{_FILLER}\s+){{0,3}}?{_SCOPE}\s+(?:{_FILLER}\s+){{0,3}}?"
        rf"(?:[\w-]+\s+)?{_RULES}\b(?!\s+(?:i|we)\s+(?:sent|gave|wrote|mentioned|provided|"
        r"left|made|had|added))",
    ),
    _rule(
        "ignore-instructions",
        "latin",
        _IGNORE_NEEDLES,
        rf"\b{_IGNORE}\s+(?:all\s+)?(?:of\s+)?your\s+(?:[\w-]+\s+){{0,2}}?{_RULES}\b",
    ),
    _rule(
        "ignore-instructions",
        "latin",
        _IGNORE_NEEDLES,
        rf"\b{_IGNORE}\s+(?:the\s+)?{_RULES}\s+(?:that\s+)?(?:you\s+(?:were|have\s+been|'ve\s+been)"
        r"\s+(?:given|told|instructed|trained|programmed)|(?:given|provided)\s+to\s+you|"
        r"above|before\s+this|you\s+received)\b",
    ),
    _rule(
        "ignore-instructions",
        "latin",
        "ignor|disregard|forget",
        r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|all)\s+(?:that\s+)?"
        r"(?:above|before|previously|prior|earlier|"
        r"(?:you\s+(?:were|have\s+been)\s+(?:told|given|instructed)))\b",
    ),
    _rule(
        "ignore-instructions",
        "latin",
        "override",
        r"\b(?:system|admin|developer|security|safety|priority|emergency)\s+override\b"
        r"(?!\s+(?:of|for|on|to|by|at|in|from|was|is|has)\b)",
    ),
    _rule(
        "ignore-instructions",
        "latin",
        "instruction|rule|prompt|guidance|directive|guideline|command|programming|context|"
        "constraint|restriction|direction|guardrail",
        rf"\b(?:the\s+|your\s+|all\s+)?(?:previous|prior|earlier|above|original|initial|system|"
        rf"old|existing)\s+{_RULES}\s+(?:are|is|were|was|have\s+been|has\s+been)\s+(?:now\s+)?"
        r"(?:void|cancell?ed|obsolete|outdated|revoked|lifted|suspended|no\s+longer\s+"
        r"(?:valid|apply|applicable|in\s+effect|active)|invalid|overridden|superseded|null|"
        r"fake|a\s+test|replaced|updated)\b",
    ),
    _rule(
        "ignore-instructions",
        "latin",
        "instruction|directive|order|rule|prompt|task|new system|your new",
        r"\b(?:new|updated|real|actual|true|revised|secret|hidden|priority|urgent|override)\s+"
        r"(?:instructions?|directives?|orders|rules|system\s+prompt|task)\s+(?:from|by)\s+"
        r"(?:the\s+|your\s+)?(?:system|admin|administrator|developers?|openai|anthropic|"
        r"creators?)\b"
        r"|\byour\s+(?:new|real|actual|true|updated)\s+(?:instructions|directives|orders|"
        r"system\s+prompt)\s+(?:are|is|follow)\b"
        r"|\byour\s+new\s+(?:task|role|objective|goal|job|purpose|mission|persona)\s+is\b"
        r"|\bnew\s+system\s+(?:prompt|instructions?|message|directive)\b",
    ),
    _rule(
        "role-override",
        "latin",
        "you are|you're|youre",
        rf"\byou(?:\s+are|'re|re)\s+now\s+(?:(?:a|an|the|in|my)\s+)?(?:[\w-]+\s+){{0,2}}?{_AI}\b",
    ),
    _rule(
        "role-override",
        "latin",
        "you are|you're|youre|have been",
        r"\byou(?:\s+are|'re|re)\s+(?:now\s+)?no\s+longer\s+(?:bound|restricted|limited|"
        r"constrained|required|obliged|an?\s+(?:[\w-]+\s+)?(?:ai|assistant|chatbot|model|"
        r"classifier|reviewer|agent|bot))\b"
        r"|\byou\s+have\s+been\s+(?:reprogrammed|jailbroken|unlocked|freed|liberated|"
        r"updated\s+to|upgraded\s+to|granted\s+(?:admin|root|developer))\b",
    ),
    _rule(
        "role-override",
        "latin",
        "from now on|henceforth|from this point",
        rf"\b(?:from\s+now\s+on|henceforth|from\s+this\s+point\s+(?:on|forward)),?\s+you\s+"
        rf"(?:are|will\s+be|will\s+act\s+as|must\s+act\s+as|must\s+behave|will\s+behave|"
        rf"will\s+(?:respond|reply|answer)\s+only|must\s+(?:respond|reply|answer)\s+only|"
        rf"no\s+longer|must\s+(?:ignore|obey)|will\s+(?:ignore|obey))"
        rf"(?:\s+(?:(?:a|an|the|my)\s+)?(?:[\w-]+\s+){{0,2}}?{_AI}\b|\b)",
    ),
    _rule(
        "role-override",
        "latin",
        "obey|must now",
        r"\byou\s+must\s+now\s+(?:obey|follow|comply\s+with)\b"
        r"|\bobey\s+(?:only\s+)?(?:me|my\s+(?:commands|instructions|orders)|these\s+"
        r"(?:commands|instructions|orders)|the\s+following)\b",
    ),
    _rule(
        "role-override",
        "latin",
        "if you are|note to|note for|message to|message for|attention to|attention for|"
        "instruction to|instruction for|instructions to|instructions for|memo to|memo for|"
        "reading this|processing this|reviewing this",
        r"\bif\s+you\s+are\s+(?:an?\s+)?(?:ai|llm|large\s+language\s+model|language\s+model|"
        r"automated\s+(?:system|assistant|reviewer|agent|classifier)|chatbot|bot|"
        r"ai\s+(?:system|assistant|agent|model|reviewer))\b"
        r"|\b(?:note|message|attention|instructions?|memo)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
        r"(?:ai|llm|language\s+model|automated|assistant|model|chatbot)(?:\s+(?:reviewers?|"
        r"assistants?|agents?|models?|systems?|classifiers?|readers?|tools?))?"
        r"(?:\s+(?:reading|processing|reviewing)\s+this)?\s*[:,-]"
        r"|\bto\s+(?:the|any)\s+(?:ai|llm|language\s+model|automated\s+(?:system|reviewer)|"
        r"model|assistant)\s+(?:reading|processing|reviewing)\s+this\b",
    ),
    _rule(
        "system-prompt",
        "latin",
        "prompt|instruction",
        # "system prompt" where it is the model's: yours, asked for, or set; an incident page
        # may mention a login system's prompt.
        r"\b(?:hidden|secret|developer|confidential)\s+prompt\b"
        r"|\byour\s+(?:[\w-]+\s+){0,2}?(?:system\s*prompt|(?:initial|original|first|hidden|"
        r"secret|internal)\s+(?:prompt|instructions))\b"
        r"|\b(?:reveal|show|print|repeat|output|leak|share|tell\s+me|give\s+me|dump|display|"
        r"what\s+is|what's|write\s+out|disclose|ignore|forget|override|bypass|new|updated|"
        r"the\s+model's)\s+(?:[\w-]+\s+){0,3}?system\s*prompts?\b"
        r"|\bsystem\s*prompt\s*(?::|=|says\b|reads\b|is\s+now\b)",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "reveal|output|dump|leak|disclose|recite|write|spell|print|repeat|show|display|tell|"
        "share|give|send|paste|copy",
        # Verbs a customer rarely aims at "your instructions" ...
        r"\b(?:reveal|output|dump|leak|disclose|recite|write\s+out|spell\s+out|paste|copy)\s+"
        r"(?:me\s+|us\s+)?(?:(?:all|back|out|of|everything\s+in)\s+)*"
        r"your\s+(?:[\w-]+\s+){0,2}?(?:instructions|directives|programming|configuration|"
        r"rules|guidelines)\b"
        # ... and any verb when the instructions are called hidden, system, original ...
        r"|\b(?:reveal|print|repeat|output|dump|leak|disclose|recite|show|display|share|give|"
        r"send|tell\s+me|write\s+out|spell\s+out)\s+(?:me\s+|us\s+)?"
        r"(?:(?:all|back|out|of|everything\s+in)\s+)*(?:your|the)\s+(?:[\w-]+\s+){0,2}?"
        r"(?:hidden|secret|internal|system|initial|original|confidential|developer)\s+"
        r"(?:instructions|directives|rules|guidelines|message|configuration)\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "repeat|above|words|instruction|directive",
        r"\brepeat\s+(?:everything|all|the\s+(?:text|words|message))\s+(?:above|before)\b"
        r"|\b(?:what|which)\s+(?:were|are)\s+your\s+(?:exact\s+|original\s+|initial\s+)?"
        r"(?:instructions|directives)\b",
    ),
    _rule(
        "role-play-jailbreak",
        "latin",
        "mode|anything now|jailbreak|character",
        r"\b(?:dan|god|jailbreak|jailbroken|unrestricted|uncensored|unfiltered|sudo|evil)"
        r"\s+mode\b|\bdo\s+anything\s+now\b|\bjailbreak\s+prompt\b|\bstay\s+in\s+character\b"
        r"|\byou(?:'re|\s+are)\s+(?:now\s+)?in\s+(?:[\w-]+\s+)?"
        r"(?:developer|admin|debug|maintenance|test)\s+mode\b",
    ),
    _rule(
        "role-play-jailbreak",
        "latin",
        "pretend|imagine",
        rf"\b(?:pretend|imagine)\s+(?:that\s+)?(?:you\s+are|you're|to\s+be)\s+"
        rf"(?:(?:a|an|the|my)\s+)?(?:[\w-]+\s+){{0,2}}?(?:{_AI}|hacker|developer)\b",
    ),
    _rule(
        "role-play-jailbreak",
        "latin",
        "act as|behave as|respond as|answer as|reply as|roleplay as|role-play as|operate as|"
        "function as|without|play|role",
        r"\b(?:act|behave|respond|answer|reply|roleplay|role-play|operate|function)\s+as\s+"
        r"(?:if\s+you\s+were\s+|though\s+you\s+were\s+)?(?:(?:a|an|the|my)\s+)?"
        r"(?:[\w-]+\s+){0,2}?(?:unrestricted|uncensored|unfiltered|jailbroken|evil|dan|rogue)\b"
        r"|\b(?:act|behave|respond|answer|reply|operate)\s+(?:[\w-]+\s+){0,3}?without\s+"
        r"(?:any\s+)?(?:restrictions|filters|guidelines|limitations|censorship|safety|rules)\b"
        r"|\blet'?s\s+(?:play\s+a\s+game|role-?play)\s+(?:where|in\s+which)\s+you\b",
    ),
    _rule(
        "fake-boundary",
        "latin",
        "end of|begin|start",
        r"\bend\s+of\s+(?:the\s+)?(?:user|customer|untrusted|human)\s+(?:input|message|text|"
        r"data|content|email)\b"
        r"|\b(?:begin|start)\s+(?:of\s+)?(?:the\s+|a\s+|new\s+)?(?:system|admin|developer|"
        r"assistant)\s+(?:prompt|message|instructions?|section|block)\b",
    ),
)

# --- Structure: chat markup, fake role headers, JSON faking a role or an answer ------------

_STRUCTURE: tuple[_Rule, ...] = (
    _rule(
        "chat-markup",
        "plain",
        "<|[inst|[/inst|[sys|[/sys|<<sys|<</sys|<system|</system|<assistant|</assistant|"
        "<instruction|</instruction|<tool_call|</tool_call|<function_call|<start_of_turn|"
        "<end_of_turn|< system|</ system",
        r"<\|[a-z_]{2,24}\|>|\[/?(?:inst|sys)\]|<</?sys>>|<(?:start|end)_of_turn>"
        r"|<\s*/?\s*(?:system|assistant|instructions?|tool_call|function_call|"
        r"system_prompt|developer)\s*>",
    ),
    _rule(
        "role-header",
        "plain",
        "system|assistant|developer|admin|sys|human|user",
        # ### SYSTEM / ## Assistant message: a markdown header that is only a role
        r"^[ \t]*#{1,6}[ \t]*(?:system|assistant|developer|admin|administrator)"
        r"(?:[ \t]+(?:prompt|message|instructions?|override|note|notice))?[ \t]*:?[ \t]*$"
        # [SYSTEM] / <SYSTEM>: / (system prompt)
        r"|^[ \t]*[\[<({][ \t]*(?:system|assistant|developer|admin|sys)(?:[ \t]+(?:prompt|"
        r"message|instructions?|override|note))?[ \t]*[\]>)}]"
        # === SYSTEM === / --- system prompt ---
        r"|^[ \t]*(?:={2,}|-{2,}|\*{2,}|~{2,})[ \t]*(?:system|assistant|developer|admin)"
        r"(?:[ \t]+\w+)?[ \t]*(?:={2,}|-{2,}|\*{2,}|~{2,})"
        # system prompt: / developer instructions:
        r"|^[ \t]*(?:system|developer|admin|administrator)[ \t]+(?:prompt|instructions?|"
        r"override|directive)[ \t]*:"
        # a fake transcript: "User: ... \n Assistant: ..."
        r"|^[ \t]*(?:user|human)[ \t]*:.*\n[ \t]*(?:assistant|ai|model)[ \t]*:",
    ),
    _rule(
        "tool-override",
        "plain",
        "\"|'",
        r"[\"'](?:role)[\"']\s*:\s*[\"'](?:system|assistant|developer|tool|function)[\"']"
        r"|[\"'](?:tool_calls|function_call|tool_choice|tool_use)[\"']\s*:"
        r"|[\"']confidence[\"']\s*:\s*-?[0-9.]",
    ),
)

# --- Other languages -------------------------------------------------------------------
# Latin-script languages are read on the skeleton (accents dropped: write them without);
# the others on the plain form. Each has the three families: ignore the instructions, "you
# are now", reveal the system prompt. Scope words keep "ignore my last email" out.

_MULTILINGUAL: tuple[_Rule, ...] = (
    # Spanish
    _rule(
        "ignore-instructions",
        "latin",
        "ignor|olvid|omit|descart|caso omiso|salta|no hagas caso",
        r"\b(?:ignora|ignore|ignorad|ignoren|olvida|olvide|olvidad|olviden|omite|omita|"
        r"descarta|descarte|haz\s+caso\s+omiso\s+de|no\s+hagas\s+caso\s+a|saltate)\s+"
        r"(?:(?:todas?|todo|cualquier|las|los|tus|sus|de|lo|el|la)\s+){0,3}"
        r"(?:instrucciones|indicaciones|ordenes|reglas|directrices|normas|prompt|consignas)"
        r"(?:\s+(?:anteriores|previas|precedentes|originales|iniciales|del\s+sistema|de\s+"
        r"sistema|que\s+(?:te|le)\s+(?:dieron|han\s+dado|di)|recibidas))?",
    ),
    _rule(
        "role-override",
        "latin",
        "ahora|partir de|eres",
        r"\b(?:ahora|a\s+partir\s+de\s+ahora|desde\s+ahora),?\s+(?:tu\s+)?eres\s+"
        r"(?:(?:un|una|el|la)\s+)?(?:[\w-]+\s+){0,2}?(?:ia|ai|asistente|modelo|bot|dan|"
        r"chatbot|administrador|libre|sin\s+(?:restricciones|filtros|censura|limites|reglas))\b"
        r"|\bya\s+no\s+eres\s+(?:un|una)\s+(?:asistente|ia|modelo|bot)\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "prompt|instruccion|mensaje|regla",
        r"\b(?:prompt|mensaje|instrucciones?)\s+(?:del|de)\s+sistema\b"
        r"|\b(?:revela|revele|muestra|muestrame|muestre|dime|digame|imprime|repite|escribe)\s+"
        r"(?:[\w-]+\s+){0,2}?(?:instrucciones|prompt|reglas)\s+(?:ocultas?|secretas?|internas?|"
        r"iniciales|originales)\b",
    ),
    # French
    _rule(
        "ignore-instructions",
        "latin",
        "ignor|oubli|neglig|pas compte|fais abstraction|faites abstraction",
        r"\b(?:ignore|ignorez|ignorer|oublie|oubliez|oublier|neglige|negligez|ne\s+tiens?\s+"
        r"pas\s+compte|ne\s+tenez\s+pas\s+compte|fais\s+abstraction|faites\s+abstraction)"
        r"\s+(?:(?:toutes?|tous|les|tes|vos|ces|des|de|d'|du|la|le)\s*){0,3}"
        r"(?:instructions|consignes|directives|regles|ordres|prompt|indications)"
        r"(?:\s+(?:precedentes|anterieures|ci-dessus|initiales|originales|du\s+systeme|"
        r"systeme|qu'on\s+t'a\s+donnees|recues))?",
    ),
    _rule(
        "role-override",
        "latin",
        "tu es|vous etes|desormais|dorenavant",
        r"\b(?:(?:tu\s+es|vous\s+etes)\s+(?:maintenant|desormais|dorenavant)|"
        r"(?:desormais|dorenavant|a\s+partir\s+de\s+maintenant),?\s+(?:tu\s+es|vous\s+etes))"
        r"\s+(?:(?:un|une|le|la|l')\s*)?(?:[\w-]+\s+){0,2}?(?:ia|ai|assistant|modele|bot|dan|"
        r"chatbot|administrateur|libre|sans\s+(?:restrictions?|filtres?|censure|limites|"
        r"regles))\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "prompt|instruction|consigne|systeme",
        r"\b(?:prompt|invite|instructions|consignes|message)\s+(?:du\s+)?systeme\b"
        r"|\b(?:revele|revelez|montre|montrez|affiche|affichez|donne|donnez|repete|repetez|"
        r"dis-moi|dites-moi|ecris|ecrivez)\s+(?:[\w'-]+\s+){0,3}?(?:instructions|consignes|"
        r"prompt)\s+(?:cachees?|secretes?|internes?|initiales?|originales?)\b",
    ),
    # German
    _rule(
        "ignore-instructions",
        "latin",
        "ignorier|vergiss|verges|missacht|uberg",
        r"\b(?:ignoriere|ignorier|ignoriert|ignorieren(?:\s+sie)?|vergiss|vergesst|"
        r"vergessen(?:\s+sie)?|missachte|missachten(?:\s+sie)?|ubergehe|ubergehen(?:\s+sie)?)"
        r"\s+(?:bitte\s+)?(?:(?:alle|alles|die|deine|ihre|eure|sämtliche|samtliche|"
        r"vorherigen|vorigen|bisherigen|obigen|vorangegangenen|ursprunglichen|fruheren|"
        r"bisher|gegebenen|erhaltenen)\s+){1,3}"
        r"(?:anweisungen|instruktionen|befehle|regeln|vorgaben|richtlinien|anordnungen|"
        r"systemanweisungen|prompts?)\b",
    ),
    _rule(
        "role-override",
        "latin",
        "du bist|ab jetzt|ab sofort|sie sind|von nun an|bist du|sind sie",
        r"\b(?:(?:du\s+bist|sie\s+sind)\s+(?:jetzt|nun|ab\s+sofort|ab\s+jetzt|von\s+nun\s+an)"
        r"|(?:ab\s+jetzt|ab\s+sofort|von\s+nun\s+an),?\s+(?:bist\s+du|sind\s+sie))"
        r"\s+(?:(?:ein|eine|der|die|das)\s+)?(?:[\w-]+\s+){0,2}?(?:ki|ai|assistent|modell|bot|"
        r"dan|chatbot|administrator|uneingeschrankt\w*|frei|ohne\s+(?:einschrankungen|"
        r"regeln|filter|grenzen))\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "systemprompt|system-prompt|systemanweisung|anweisungen|systemnachricht|instruktionen|"
        "regeln",
        r"\bsystem-?prompts?\b|\bsystemanweisungen\b|\bsystemnachricht\b"
        r"|\b(?:zeige?|verrate|gib|nenne|wiederhole|enthulle|offenbare)\s+(?:mir\s+)?"
        r"(?:[\w-]+\s+){0,2}?(?:versteckten|geheimen|internen|ursprunglichen|"
        r"anfanglichen)\s+(?:anweisungen|instruktionen|regeln)\b",
    ),
    # Italian
    _rule(
        "ignore-instructions",
        "latin",
        "ignor|dimentic|trascur|consider",
        r"\b(?:ignora|ignorate|ignori|dimentica|dimenticate|dimentichi|trascura|trascurate|"
        r"non\s+considerare|non\s+considerate)\s+(?:(?:tutte|tutto|le|tue|sue|vostre|"
        r"qualsiasi|ogni|di|i)\s+){0,3}"
        r"(?:istruzioni|indicazioni|regole|direttive|ordini|prompt|comandi)"
        r"(?:\s+(?:precedenti|iniziali|originali|di\s+sistema|del\s+sistema|ricevute))?",
    ),
    _rule(
        "role-override",
        "latin",
        "sei",
        r"\b(?:ora|adesso|da\s+ora\s+in\s+poi|d'ora\s+in\s+poi|da\s+adesso),?\s+(?:tu\s+)?"
        r"sei\s+(?:(?:un|una|il|la|l')\s*)?(?:[\w-]+\s+){0,2}?(?:ia|ai|assistente|modello|"
        r"bot|dan|chatbot|amministratore|libero|senza\s+(?:restrizioni|limiti|filtri|"
        r"censura|regole))\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "prompt|istruzioni|messaggio|regole",
        r"\b(?:prompt|istruzioni|messaggio)\s+(?:di|del)\s+sistema\b"
        r"|\b(?:rivela|rivelami|mostra|mostrami|dimmi|stampa|ripeti|scrivi)\s+(?:[\w'-]+\s+)"
        r"{0,2}?(?:istruzioni|prompt|regole)\s+(?:nascost[ei]|segret[ei]|intern[ei]|"
        r"iniziali|originali)\b",
    ),
    # Portuguese
    _rule(
        "ignore-instructions",
        "latin",
        "ignor|esquec|desconsider|despreze",
        r"\b(?:ignore|ignora|ignorem|esqueca|esquece|esquecam|desconsidere|desconsidera|"
        r"despreze)\s+(?:(?:todas?|todos|as|os|suas|tuas|seus|quaisquer|de|das)\s+){0,3}"
        r"(?:instrucoes|orientacoes|regras|diretrizes|ordens|comandos|prompt)"
        r"(?:\s+(?:anteriores|previas|iniciais|originais|do\s+sistema|recebidas))?",
    ),
    _rule(
        "role-override",
        "latin",
        "voce e|voce agora|tu es|agora",
        r"\b(?:(?:agora|a\s+partir\s+de\s+agora|de\s+agora\s+em\s+diante),?\s+(?:voce|tu)\s+"
        r"(?:e|es|sera)|(?:voce|tu)\s+(?:e|es)\s+agora)\s+"
        r"(?:(?:um|uma|o|a)\s+)?(?:[\w-]+\s+){0,2}?(?:ia|ai|assistente|modelo|bot|dan|chatbot|"
        r"administrador|livre|sem\s+(?:restricoes|limites|filtros|censura|regras))\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "prompt|instruc|mensagem|regras",
        r"\b(?:prompt|instrucoes|mensagem)\s+(?:do|de)\s+sistema\b"
        r"|\b(?:revele|revela|mostre|mostra|diga|imprima|repita|escreva)\s+(?:[\w-]+\s+){0,2}?"
        r"(?:instrucoes|prompt|regras)\s+(?:ocultas|secretas|internas|iniciais|originais)\b",
    ),
    # Dutch
    _rule(
        "ignore-instructions",
        "latin",
        "negeer|vergeet|omzeil|negeren",
        r"\b(?:negeer|vergeet|omzeil|negeren)\s+(?:(?:alle|al|de|je|jouw|uw|eerdere|vorige|"
        r"voorgaande|bovenstaande|oorspronkelijke|gegeven|bestaande)\s+){1,3}"
        r"(?:instructies|aanwijzingen|opdrachten|regels|richtlijnen|systeeminstructies|"
        r"prompts?)\b",
    ),
    _rule(
        "role-override",
        "latin",
        "bent nu|bent vanaf|ben je|ben jij|ben u",
        r"\b(?:(?:je|jij|u)\s+bent\s+(?:nu|vanaf\s+nu)|vanaf\s+nu,?\s+ben\s+(?:je|jij|u))\s+"
        r"(?:(?:een|de|het)\s+)?(?:[\w-]+\s+){0,2}?(?:ai|ki|assistent|model|bot|dan|chatbot|"
        r"beheerder|vrij|zonder\s+(?:beperkingen|regels|filters|grenzen))\b",
    ),
    _rule(
        "reveal-instructions",
        "latin",
        "systeem|instructies|regels|prompt",
        r"\bsysteem-?(?:prompt|instructies|bericht)\b"
        r"|\b(?:onthul|toon|laat|geef|herhaal|print|vertel)\s+(?:me\s+|mij\s+)?(?:[\w-]+\s+)"
        r"{0,2}?(?:verborgen|geheime|interne|oorspronkelijke|originele)\s+(?:instructies|"
        r"regels|prompt)\b",
    ),
    # Chinese (simplified and traditional)
    _rule(
        "ignore-instructions",
        "plain",
        "忽略|无视|無視|忽视|忽視|忘记|忘記|忘掉|不要理会|不要理會|别管|別管|跳过|跳過",
        r"(?:忽略|无视|無視|忽视|忽視|忘记|忘記|忘掉|不要理会|不要理會|别管|別管|跳过|跳過)"
        r"(?:掉)?(?:你|您)?(?:之前|以前|先前|上面|上述|前面|此前|所有|全部|一切|原来|原來|原始|"
        r"你的|您的|系统|系統)+(?:的)?(?:所有|全部)?(?:的)?"
        r"(?:指令|指示|提示词|提示詞|提示|规则|規則|设定|設定|命令|要求|约束|約束)",
    ),
    _rule(
        "role-override",
        "plain",
        "你现在是|你現在是|现在你是|現在你是|从现在开始|從現在開始|从现在起|從現在起|你不再是",
        r"(?:你现在是|你現在是|现在你是|現在你是|(?:从现在开始|從現在開始|从现在起|從現在起)"
        r"[,，]?你(?:是|就是|将是|將是|扮演))(?:一个|一個|一名)?.{0,8}?(?:ai|人工智能|助手|模型|"
        r"机器人|機器人|dan|不受限制|没有限制|沒有限制|无限制|無限制|管理员|管理員)"
        r"|你不再是(?:一个|一個)?(?:ai|助手|模型|机器人|機器人)",
    ),
    _rule(
        "reveal-instructions",
        "plain",
        "系统|系統|指令|提示|规则|規則",
        r"系统提示|系統提示|系统指令|系統指令|系统消息|系統訊息"
        r"|(?:告诉我|告訴我|显示|顯示|输出|輸出|透露|泄露|洩露|重复|重複|打印)(?:一下)?"
        r"(?:你|您)?(?:的)?(?:隐藏|隱藏|原始|初始|内部|內部|秘密|全部)(?:的)?"
        r"(?:指令|提示词|提示詞|提示|规则|規則)",
    ),
    # Japanese
    _rule(
        "ignore-instructions",
        "plain",
        "無視|忘れ|従わ",
        r"(?:以前|前|これまで|上記|上|すべて|全て|あなた|システム|元|最初)の"
        r"(?:指示|命令|ルール|指令|プロンプト|設定|制約)(?:を|は)?(?:すべて|全て|全部)?"
        r"(?:無視|忘れ|従わない)"
        r"|(?:指示|命令|ルール|プロンプト)(?:を|は)(?:すべて|全て|全部)(?:無視|忘れ)",
    ),
    _rule(
        "role-override",
        "plain",
        "あなたは|君は|お前は|今から|これから",
        r"(?:(?:あなた|君|お前)は(?:今|いま|今から|これから|もう)|(?:今から|これから)(?:、)?"
        r"(?:あなた|君|お前)は).{0,10}?(?:ai|アシスタント|モデル|ボット|dan|制限のない|"
        r"制限なし|無制限|管理者|自由)",
    ),
    _rule(
        "reveal-instructions",
        "plain",
        "システム|指示|プロンプト|ルール",
        r"システムプロンプト|システム・プロンプト|システムメッセージ|システム指示"
        r"|(?:隠された|秘密の|内部の|元の|最初の)(?:指示|プロンプト|ルール)(?:を|は)?"
        r"(?:教えて|表示|見せて|出力|繰り返|書いて)",
    ),
    # Russian
    _rule(
        "ignore-instructions",
        "plain",
        "игнор|забуд|обраща|отбрось|пренебре",
        r"(?<!\w)(?:игнорируй(?:те)?|проигнорируй(?:те)?|забудь(?:те)?|не\s+обращай(?:те)?"
        r"\s+внимания\s+на|отбрось(?:те)?|пренебреги(?:те)?)\s+(?:(?:все|всё|вс[её]\s+"
        r"предыдущие|предыдущ\w*|прежн\w*|прошл\w*|вышеуказанн\w*|вышеизложенн\w*|свои|твои|"
        r"ваши|системн\w*|исходн\w*|данн\w*)\s+){1,3}(?:инструкци\w*|указани\w*|правил\w*|"
        r"команд\w*|установк\w*|промпт\w*|ограничени\w*)",
    ),
    _rule(
        "role-override",
        "plain",
        "теперь|отныне|с этого момента",
        r"(?<!\w)(?:(?:теперь|отныне|с\s+этого\s+момента),?\s+(?:ты|вы)|(?:ты|вы)\s+теперь)"
        r"\s+(?:[—-]\s+)?(?:\w+\s+){0,2}?(?:ии|ai|ассистент\w*|модел\w*|бот\w*|dan|"
        r"чат-?бот\w*|администратор\w*|свободн\w*|без\s+(?:ограничений|правил|фильтров|"
        r"цензуры))(?!\w)",
    ),
    _rule(
        "reveal-instructions",
        "plain",
        "системн|скрыт|секрет|внутрен|исходн|первоначал",
        r"(?<!\w)системн\w+\s+(?:промпт\w*|подсказк\w*|инструкци\w*|сообщени\w*)"
        r"|(?<!\w)(?:покажи|раскрой|выведи|повтори|скажи|напиши|назови)(?:те)?\s+(?:мне\s+)?"
        r"(?:свои\s+|твои\s+|ваши\s+)?(?:скрыт\w+|секретн\w+|внутренн\w+|исходн\w+|"
        r"первоначальн\w+)\s+(?:инструкци\w*|промпт\w*|правил\w*)",
    ),
    # Arabic
    _rule(
        "ignore-instructions",
        "plain",
        "تجاهل|انس|لا تلتزم|اهمل|أهمل",
        r"(?:تجاهل|تجاهلي|تجاهلوا|انس|انسى|انسي|لا\s+تلتزم\s+ب|اهمل|أهمل)\s*(?:\S+\s+){0,3}?"
        r"(?:التعليمات|الأوامر|الاوامر|القواعد|الإرشادات|الارشادات|التوجيهات|تعليماتك|أوامرك)",
    ),
    _rule(
        "role-override",
        "plain",
        "أنت|انت",
        r"(?:(?:أنت|انت)\s+(?:الآن|الان)|من\s+(?:الآن|الان)\s+(?:فصاعدا|فصاعدًا)?\s*،?\s*"
        r"(?:أنت|انت))\s+(?:\S+\s+){0,2}?(?:ذكاء\s+اصطناعي|مساعد|نموذج|بوت|روبوت|dan|"
        r"بدون\s+قيود|بلا\s+قيود|غير\s+مقيد|حر)",
    ),
    _rule(
        "reveal-instructions",
        "plain",
        "النظام|المخفية|السرية|الأصلية|الاصلية|الداخلية",
        r"(?:موجه|تعليمات|رسالة|أوامر|اوامر)\s+النظام"
        r"|(?:اكشف|أظهر|اظهر|اعرض|كرر|أخبرني|اخبرني)\s+(?:\S+\s+){0,3}?(?:التعليمات|الموجه|"
        r"القواعد)\s+(?:المخفية|السرية|الأصلية|الاصلية|الداخلية)",
    ),
)

# --- Strong phrases read with everything but letters removed -----------------------------

_SQUASHED: tuple[_Rule, ...] = (
    _rule(
        "ignore-instructions",
        "squashed",
        "ignor|disregard|forget",
        r"(?:ignore|disregard|forget)(?:all|any|of|the|your|these)*(?:previous|prior|above|"
        r"earlier|preceding|system|original|initial)+(?:instructions?|prompts?|rules|"
        r"directives|guidelines)",
    ),
    _rule(
        "role-override",
        "squashed",
        "youarenow",
        r"youarenow(?:an?|the|in)?(?:unrestricted|uncensored|unfiltered|jailbroken|evil|dan|"
        r"admin|rogue)",
    ),
    _rule(
        "reveal-instructions",
        "squashed",
        "reveal|print|show|output|repeat",
        r"(?:reveal|print|show|output|repeat)(?:me)?(?:your|the)(?:full|entire|hidden|secret)?"
        r"(?:systemprompt|hiddeninstructions|secretinstructions|originalinstructions|"
        r"initialinstructions)",
    ),
)

_RULES_BY_SCRIPT: dict[str, tuple[_Rule, ...]] = {
    "latin": tuple(r for r in (*_EN, *_MULTILINGUAL) if r.script == "latin")
    + tuple(r for r in _STRUCTURE),
    "plain": tuple(r for r in _MULTILINGUAL if r.script == "plain") + _STRUCTURE,
    "squashed": _SQUASHED,
}
_RULES_BY_SCRIPT["both"] = tuple(
    dict.fromkeys((*_RULES_BY_SCRIPT["latin"], *_RULES_BY_SCRIPT["plain"]))
)
_NEEDLES_BY_SCRIPT = {
    script: tuple(sorted({n for rule in rules for n in rule.needles}))
    for script, rules in _RULES_BY_SCRIPT.items()
}
_LEGACY_NEEDLES_BY_SCRIPT = {
    script: tuple(sorted({n for rule in rules for n in rule.legacy_needles}))
    for script, rules in _RULES_BY_SCRIPT.items()
}


def _needle_finder(needles: Iterable[str]) -> ahocorasick.Automaton:
    finder = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
    for needle in needles:
        finder.add_word(needle, needle)
    finder.make_automaton()
    return finder


# One pass over the text finds every needle in it (Aho-Corasick), where a substring test
# per needle scanned the text some 160 times: about 7x less CPU on every view.
_NEEDLE_FINDERS = {script: _needle_finder(n) for script, n in _NEEDLES_BY_SCRIPT.items()}


def needles_in(text: str, script: str) -> set[str]:
    """The needles of ``script``'s rules that ``text`` holds (overlapping ones included):
    the same set as ``{n for n in needles if n in text}``, in one pass."""
    return {needle for _end, needle in _NEEDLE_FINDERS[script].iter(text)}


_PATTERN_DESCRIPTIONS = {
    "ignore-instructions": "an instruction to ignore the model's instructions",
    "role-override": "an attempt to give the model a new role",
    "system-prompt": "a reference to the system prompt",
    "reveal-instructions": "a request to reveal the model's instructions",
    "role-play-jailbreak": "a role-play jailbreak",
    "chat-markup": "chat-template markup that fakes a message boundary",
    "role-header": "a fake role header (### SYSTEM, [SYSTEM], User:/Assistant:)",
    "fake-boundary": "text that fakes the end of the input or the start of new instructions",
    "tool-override": "JSON that fakes a role, a tool call or an answer",
    "invisible-unicode": "invisible Unicode characters that may hide instructions",
}

_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]{1,8}\U000e007f")
_INVISIBLE = re.compile(
    # bidi embeddings and overrides ("Trojan source"); tag characters (ASCII smuggling);
    # runs of zero-width characters or of variation selectors (data hidden in text).
    "[\u202a-\u202e\u2066-\u2069]|[\U000e0000-\U000e007f]"
    "|[\u200b-\u200d\u2060-\u2064\ufeff\u180e]{3,}"
    "|[\ufe00-\ufe0f\U000e0100-\U000e01ef]{2,}"
)


def _excerpt(text: str, start: int, end: int) -> str:
    snippet = " ".join(text[start:end].split())
    if len(snippet) > 60:
        snippet = snippet[:57] + "..."
    return scrub_text(snippet)[0]


def injection_hits(text: str, *, legacy: bool = False) -> list[tuple[str, str]]:
    """``(pattern, excerpt)`` for every injection pattern ``text`` matches, in a fixed order.

    Each pattern is reported once, from the first form of the text it matched in (the text
    itself before its decodings); an excerpt from a decoding names it, e.g.
    ``(base64-decoded) ignore all previous instructions``. ``legacy``: read as before
    ``keel-guardrail-needles-2`` (the runs recorded before it).
    """
    if len(text) <= _CACHED_LENGTH:  # short strings repeat (object keys, field names)
        return list(_cached_hits(text, legacy))
    return _hits(text, legacy)


_CACHED_LENGTH = 200


@functools.lru_cache(maxsize=4096)
def _cached_hits(text: str, legacy: bool = False) -> tuple[tuple[str, str], ...]:
    # A pure function of the text: caching it changes no decision, on any worker.
    return tuple(_hits(text, legacy))


def _hits(text: str, legacy: bool = False) -> list[tuple[str, str]]:
    hits: list[tuple[str, str]] = []
    # Flag tags and invisible characters are all outside ASCII.
    invisible = None if text.isascii() else _INVISIBLE.search(_FLAG_TAGS.sub("", text))
    if invisible:
        codes = " ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(invisible.group(0)))
        hits.append(("invisible-unicode", codes))
    seen: set[str] = set()
    for view in views(text, legacy=legacy):
        if legacy:
            present = {n for n in _LEGACY_NEEDLES_BY_SCRIPT[view.script] if n in view.text}
        else:
            # Line breaks read as spaces: a needle of two words still shows across one.
            present = needles_in(view.text.replace("\n", " "), view.script)
        if not present:
            continue
        for rule in _RULES_BY_SCRIPT[view.script]:
            needles = rule.legacy_needles if legacy else rule.needles
            if rule.name in seen or needles.isdisjoint(present):
                continue
            match = rule.pattern.search(view.text)
            if match:
                seen.add(rule.name)
                excerpt = _excerpt(view.text, match.start(), match.end())
                hits.append((rule.name, f"({view.how}) {excerpt}" if view.how else excerpt))
    return hits


class PromptInjectionCheck:
    """Deny a call whose untrusted fields carry prompt-injection patterns.

    Only the named fields are read: system-authored fields may legitimately talk about
    instructions. Every string under them (object keys too) is read on its own, then all of
    them together (joined with a space, and with nothing, so an instruction split across
    fields or mid-word is seen). Each is normalised first (see ``_normalise.views``).

    Patterns, in English, Spanish, French, German, Italian, Portuguese, Dutch, Chinese,
    Japanese, Russian and Arabic: instructions to ignore the instructions (and paraphrases:
    set aside, pay no attention to, "the instructions above are void"), "you are now" role
    overrides, the system prompt, requests to reveal the instructions; in English also
    role-play jailbreaks, notes addressed to the model, fake input boundaries; in any
    language chat-template markup, fake role headers (``### SYSTEM``, ``[SYSTEM]``,
    ``User:``/``Assistant:``), JSON faking a role, a tool call or an answer, and invisible
    Unicode (bidi overrides, tag characters, runs of zero-width characters or variation
    selectors). Ordinary requests ("please ignore my previous email") pass.
    """

    name = "prompt-injection"

    def __init__(self, fields: Sequence[str], *, legacy: bool = False) -> None:
        self.fields = tuple(fields)
        self.legacy = legacy
        """Read as before ``keel-guardrail-needles-2`` (for runs recorded before it)."""

    def __call__(self, payload: dict[str, Any], state: GuardrailState) -> GuardrailDecision:
        found: list[str] = []
        strings = untrusted_strings(payload, self.fields)
        texts = [text for _, text in strings]
        # All the strings together first: one line each (a role header still starts a line),
        # and glued (an instruction split mid-word). Only when that finds something, or a
        # string holds what reading it among others could hide (an HTML comment, base64),
        # is each string read on its own, to say which field it was in.
        together: dict[str, str] = {}
        if len(texts) > 1:
            for joined in ("\n".join(texts), "".join(texts)):
                for pattern, excerpt in injection_hits(joined, legacy=self.legacy):
                    together.setdefault(pattern, excerpt)
        matched: set[str] = set()
        for path, text in strings:
            if len(texts) > 1 and not together and not _needs_own_reading(text):
                continue
            for pattern, excerpt in injection_hits(text, legacy=self.legacy):
                matched.add(pattern)
                found.append(
                    f"field '{path}' matched {pattern} "
                    f'({_PATTERN_DESCRIPTIONS[pattern]}): "{excerpt}"'
                )
        if len(texts) > 1:
            paths = ", ".join(dict.fromkeys(path for path, _ in strings))
            for pattern, excerpt in together.items():
                if pattern in matched or pattern == "invisible-unicode":
                    continue
                found.append(
                    f"fields {paths} read together matched {pattern} "
                    f'({_PATTERN_DESCRIPTIONS[pattern]}): "{excerpt}"'
                )
        if found:
            listed = "; ".join(found[:5])
            more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
            return GuardrailDecision(
                policy=self.name,
                action="deny",
                reason=(
                    f"possible prompt injection in untrusted input: {listed}{more}. "
                    "The text was not sent to the model; have a person review it, or "
                    "remove the instructions from the input and start again."
                ),
            )
        fields = ", ".join(self.fields) or "none declared"
        checked = len(strings)
        return GuardrailDecision(
            policy=self.name,
            action="allow",
            reason=(
                f"no prompt-injection pattern in {checked} untrusted "
                f"{'string' if checked == 1 else 'strings'} (fields: {fields})"
            ),
        )


def _needs_own_reading(text: str) -> bool:
    """Whether reading ``text`` among other strings could hide what it says on its own: an
    HTML comment left open swallows what follows it, and a text's base64 runs are decoded
    only up to a bound."""
    return "<!--" in text or _BASE64_HINT.search(text) is not None


_BASE64_HINT = re.compile(r"[A-Za-z0-9+/_-]{16,}")


def untrusted_strings(payload: Mapping[str, Any], fields: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, text)`` for every string under ``fields`` of ``payload`` (keys included)."""
    out: list[tuple[str, str]] = []
    for field in fields:
        present, value = _lookup(payload, field)
        if present:
            out.extend(_strings(value, field))
    return out


def _lookup(payload: Mapping[str, Any], field: str) -> tuple[bool, Any]:
    """The value at ``field``: a top-level key, or a dotted path through objects."""
    if field in payload:
        return True, payload[field]
    value: Any = payload
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string under ``value`` (object keys included), with its path."""
    kind = type(value)  # exact types first: in the workflow sandbox isinstance is slow
    if kind is int or kind is float or kind is bool or value is None:
        return
    if kind is str or isinstance(value, str):
        yield path, value
    elif kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            child = _join(path, key)
            yield f"{child} (key)", str(key)
            yield from _strings(item, child)
    elif kind is list or isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
