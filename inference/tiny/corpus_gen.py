"""Regenerate `corpus.txt`, the fixed text the tiny model's tokenizer is trained on.

Not used at runtime: the corpus file is checked in, so the tokenizer (and the tiny model's
bytes) never change when this script or Python's `random` changes. Every sentence here is
original: hand-written paragraphs (English, other languages, code, emoji) followed by
sentences composed from small hand-written grammars with a fixed seed.

    python -m inference.tiny.corpus_gen > inference/tiny/corpus.txt
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

_HANDWRITTEN = """\
Sluicegate is a small gateway that lets people generate text through an API, but only after
an operator lets them in. A developer joins the waitlist, says what they want to build, and
waits. When the application is approved, an account is created and the developer can mint
API keys. Every request carries a key; the gateway checks it, counts the tokens, and passes
the prompt to an engine that writes the completion one token at a time.

The engine keeps many requests in one running batch. Each request owns a list of blocks in a
paged cache of keys and values, so memory is handed out in small pieces and given back the
moment a request finishes. When two prompts begin with the same words, they share the blocks
that hold those words. When memory runs out, the newest request is pushed back to the queue
and recomputed later, which is slower but never wrong.

Tokens are not words. A tokenizer cuts text into pieces it has seen often: common words stay
whole, rare words fall apart into syllables, and unusual characters fall apart into bytes.
An accented letter such as é or ñ takes two bytes, a Chinese character such as 水 takes three,
and an emoji such as 🌊 takes four, so a single character may be spread over several tokens.
The detokenizer waits until a character is complete before it shows any of it.

A sluice gate is a sliding door in a channel. Raise it a little and a thin sheet of water
slips underneath; raise it fully and the river pours through. Millers used sluices to feed
their wheels, farmers used them to water fields, and towns used them to keep floods out of
their streets. The gatekeeper decides how much passes, and when.

Français : Le barrage retient l'eau pendant l'hiver. Au printemps, l'éclusier ouvre la vanne
et la rivière reprend son cours. Les élèves regardent les péniches passer l'écluse, ça les
amuse beaucoup. « Où va ce bateau ? » demande Zoé. — Vers la mer, répond son frère Loïc.

Deutsch: Die Schleuse öffnet sich nur, wenn das Wasser auf beiden Seiten gleich hoch steht.
Über die Brücke gehen Fußgänger, während unten ein Frachtschiff wartet. Größere Schiffe
müssen länger warten; die Schleusenwärterin führt ein Buch über jede Durchfahrt.

Español: El año pasado, la compañía construyó una compuerta nueva junto al río. Los niños
aprendieron que el agua baja más rápido cuando la pendiente es mayor. ¿Quién cerrará la
compuerta esta noche? ¡Nadie lo sabe todavía! La señora Muñoz dice que mañana lloverá.

Português: A comporta da represa foi aberta às três horas. Os pescadores não gostaram, mas
a prefeitura explicou a situação: era preciso baixar o nível da água antes da tempestade.

Polski: Śluza na rzece zamyka się o zmroku. Żeglarze czekają cierpliwie, a dzieci liczą
łodzie przepływające pod mostem. Zażółć gęślą jaźń.

Tiếng Việt: Con đê giữ nước cho cánh đồng lúa. Khi trời mưa lớn, người ta mở cống để nước
chảy ra sông. Mùa gặt năm nay rất tốt.

Ελληνικά: Το φράγμα κρατά το νερό του ποταμού. Όταν βρέχει πολύ, ο φύλακας ανοίγει την πύλη.

Русский: Шлюз на канале открывают каждое утро. Баржи проходят медленно, а на берегу
рыбаки ждут хорошего улова. Вода в реке холодная даже летом.

日本語：川の水門は朝六時に開きます。雨が多い季節には、水位を毎時間確認します。
小さな船が水門を通ると、子どもたちが手を振ります。今日は晴れて、とても気持ちがいいです。

中文：这条河上有一座古老的水闸。春天的时候，农民打开水闸灌溉田地；夏天雨水太多，
管理员就关上闸门保护村庄。我们每天早上都去河边散步，看水鸟在水面上飞。

한국어: 강에 있는 수문은 아침마다 열립니다. 비가 많이 오면 관리인이 수위를 확인합니다.
아이들은 다리 위에서 배를 구경합니다.

Emoji: the gate opens 🚪, the water rises 🌊, the boat passes ⛵, the fish jump 🐟🐟, and
everyone cheers 🎉. Weather today: ☀️ in the morning, 🌧️ after lunch, 🌈 at dusk. Good job 👍🏽!
Family 👨‍👩‍👧‍👦, flags 🇫🇷 🇯🇵 🇧🇷, hearts ❤️ 💙 💚, math ∑ ∫ √ ≤ ≥ ≠ ∞ π, arrows → ← ↑ ↓.

def admit(request, limiter):
    # Reserve the worst case up front; settle the real usage when the request ends.
    tokens = request.prompt_tokens + request.max_tokens * request.n
    if not limiter.reserve(request.key_id, tokens):
        raise RateLimited(retry_after=limiter.retry_after(request.key_id))
    return tokens

class BlockTable:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.blocks: list[int] = []

    def slots_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size) - len(self.blocks)

{"model": "tiny", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7}
{"id": "cmpl-7f3a", "object": "text_completion", "choices": [{"index": 0, "text": " there",
"finish_reason": "length"}], "usage": {"prompt_tokens": 4, "completion_tokens": 16}}

curl -s http://127.0.0.1:8000/v1/completions -H "Authorization: Bearer sk-..." \\
  -d '{"model": "tiny", "prompt": "Hello", "max_tokens": 8}'

SELECT account_id, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion
FROM usage_ledger WHERE started_at >= '2025-01-01' GROUP BY account_id ORDER BY 2 DESC;

Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 16 32 64 100 128 256 512 1000 1024 2048 4096 65536
3.14159 2.71828 1e-5 0.02 -1 42 1,000,000 $19.99 €5 £3 ¥100 50% 7:30 2025-03-14T15:09:26Z
"""

_SUBJECTS = [
    "the scheduler",
    "the engine",
    "the gateway",
    "each request",
    "the cache",
    "the router",
    "the tokenizer",
    "an operator",
    "the limiter",
    "the ledger",
    "a developer",
    "the model",
    "the sampler",
    "every replica",
    "the database",
    "the queue",
    "the server",
    "a client",
    "the river",
    "the gatekeeper",
    "the old mill",
    "the village",
    "a small boat",
    "the storm",
]
_VERBS = [
    "waits for",
    "counts",
    "reads",
    "writes",
    "checks",
    "frees",
    "shares",
    "streams",
    "measures",
    "rejects",
    "accepts",
    "records",
    "schedules",
    "batches",
    "splits",
    "merges",
    "opens",
    "closes",
    "follows",
    "guards",
    "fills",
    "drains",
    "watches",
    "carries",
]
_OBJECTS = [
    "the next token",
    "a block of memory",
    "the prompt",
    "every key",
    "the usage row",
    "a long prefix",
    "the waiting queue",
    "the running batch",
    "an expired key",
    "the last byte",
    "a stop string",
    "the price table",
    "the rate limit",
    "the chat template",
    "the water level",
    "the wooden gate",
    "the spring flood",
    "the narrow channel",
    "the morning light",
    "a heavy cart",
    "the stone bridge",
    "the evening bell",
]
_ADVERBIALS = [
    "at every step",
    "before the deadline",
    "without a lock",
    "in one atomic script",
    "when memory runs low",
    "after the request ends",
    "as soon as it can",
    "once per minute",
    "in the morning",
    "during the storm",
    "under heavy load",
    "for each tenant",
    "while the others wait",
    "with great care",
    "in small pieces",
    "from left to right",
]
_CONNECTIVES = ["and", "but", "so", "because", "while", "although", "until", "since"]
_ADJECTIVES = [
    "quiet",
    "busy",
    "narrow",
    "patient",
    "precise",
    "heavy",
    "bright",
    "cold",
    "careful",
    "fast",
    "slow",
    "simple",
    "shared",
    "fresh",
    "stale",
    "broken",
    "steady",
    "clever",
]
_NOUNS = [
    "batch",
    "token",
    "block",
    "prompt",
    "request",
    "engine",
    "river",
    "gate",
    "channel",
    "meadow",
    "ledger",
    "replica",
    "cache",
    "bridge",
    "harbor",
    "keeper",
    "lantern",
    "field",
]
_NAMES = [
    "Ada",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Eun-ji",
    "Farah",
    "Günter",
    "Hana",
    "Iñaki",
    "Jun",
    "Kofi",
    "Lena",
    "Mateo",
    "Noor",
    "Océane",
    "Priya",
    "Quinn",
    "Rūta",
]
_TOPICS = [
    "rate limits",
    "prefix caching",
    "chunked prefill",
    "API keys",
    "billing reports",
    "the waitlist",
    "stop strings",
    "streaming",
    "preemption",
    "tensor parallelism",
]


def _sentence(rng: random.Random) -> str:
    clause = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    if rng.random() < 0.6:
        clause += f" {rng.choice(_ADVERBIALS)}"
    if rng.random() < 0.4:
        clause += (
            f", {rng.choice(_CONNECTIVES)} {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}"
            f" {rng.choice(_OBJECTS)}"
        )
    return clause[0].upper() + clause[1:] + rng.choice([".", ".", ".", "!", "?", ";"])


def _description(rng: random.Random) -> str:
    first, second = rng.sample(_ADJECTIVES, 2)
    noun = rng.choice(_NOUNS)
    return f"The {first} {noun} was {second}, and {rng.choice(_SUBJECTS)} knew it."


def _dialogue(rng: random.Random) -> str:
    asker, helper = rng.sample(_NAMES, 2)
    topic = rng.choice(_TOPICS)
    return (
        f"{asker}: Can you explain {topic} to me?\n"
        f"{helper}: Sure. {_sentence(rng)} {_sentence(rng)}\n"
        f"{asker}: Thanks, that helps. {_description(rng)}\n"
    )


def _log_line(rng: random.Random) -> str:
    status = rng.choice([200, 200, 200, 400, 401, 404, 429, 503])
    return (
        f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        f" request_id=req_{rng.getrandbits(32):08x}"
        f" status={status} prompt_tokens={rng.randint(1, 900)}"
        f" completion_tokens={rng.randint(0, 256)} latency_ms={rng.randint(3, 4000)}"
    )


def _paragraph(rng: random.Random) -> str:
    makers: list[Callable[[random.Random], str]] = [_sentence, _sentence, _description]
    return " ".join(rng.choice(makers)(rng) for _ in range(rng.randint(3, 8)))


def generate(seed: int = 20250301, target_bytes: int = 300_000) -> str:
    rng = random.Random(seed)
    parts = [_HANDWRITTEN]
    size = len(_HANDWRITTEN.encode("utf-8"))
    while size < target_bytes:
        kind = rng.random()
        if kind < 0.65:
            piece = _paragraph(rng)
        elif kind < 0.85:
            piece = _dialogue(rng)
        elif kind < 0.95:
            piece = "\n".join(_log_line(rng) for _ in range(rng.randint(2, 5)))
        else:  # revisit the hand-written multilingual lines so bytes recur
            piece = rng.choice(_HANDWRITTEN.split("\n\n"))
        parts.append(piece)
        size += len(piece.encode("utf-8")) + 2
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(generate())
