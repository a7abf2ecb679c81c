"""sparsedoc-mini document/question generator (pure Python, shared by training and evaluation).

A document is the exact prompt the app builds (data/models/sparsedoc-mini/MODEL.md):

    <|system|>Answer from the document. Quote the value and cite its marker.\n<|document|>\n
    [p. N] text\n ...          (pages)   or   [path:L] text\n ...   (code/text lines)
    <|question|>QUESTION\n<|answer|>VALUE [MARKER]<|end|>

Facts ("needles") are planted at random depths; the question asks for one planted value and the
answer cites the marker of the passage that holds it. Distractor facts of the same templates with
other keys are planted too.

Everything is built as a list of *pieces*: strings, or pre-encoded pool items. The caller gives
`enc(str) -> piece` (identity for text, a tokenizer for ids) and `size(piece)` (tokens or an
estimate), so training (token ids) and evaluation (text) share one code path. Pieces are cut only at
pre-tokenizer boundaries (a marker, then a body that starts with a space, then "\n"), so encoding
pieces separately gives the same ids as encoding the joined text.
"""
import random

SPECIALS = ["<|bos|>", "<|end|>", "<|system|>", "<|document|>", "<|question|>", "<|answer|>", "<|pad|>"]
SYSTEM = "Answer from the document. Quote the value and cite its marker.\n"
HEAD = "<|system|>" + SYSTEM + "<|document|>\n"

_C = "b c d f g h j k l m n p r s t v w z br cr dr fl gr kr pl pr st tr ch sh th".split()
_V = "a e i o u a e i o ai ea ou ie".split()
_END = ["", "", "n", "r", "s", "l", "th", "nd", "x", "m"]
WORDS = ("Bluebird Falcon Granite Juniper Saffron Cobalt Meridian Quartz Harbor Lantern Willow Ember Summit "
         "Tundra Velvet Orchid Canyon Beacon Cypress Marble Thistle Aurora Basalt Comet Delta Fjord Glacier "
         "Hazel Indigo Jasper Kestrel Lotus Magnet Nebula Onyx Pebble Raven Sparrow Topaz Umber Vortex "
         "Walnut Yarrow Zephyr Acorn Birch Cedar Dune Echo Fern Garnet Heron Iris Jade Kiln Lark Maple").split()
MONTHS = ("January February March April May June July August September October November December").split()
PARAMS = ["maximum batch size", "default timeout in seconds", "retry limit", "cache size in megabytes",
          "number of worker threads", "queue depth", "maximum file size in kilobytes", "default port",
          "buffer length", "poll interval in milliseconds", "connection limit", "page size",
          "log level", "minimum password length", "session lifetime in minutes", "block size"]
JOBS = ["engineer", "accountant", "architect", "designer", "librarian", "pilot", "chemist", "editor",
        "surgeon", "economist", "gardener", "translator"]
TOPICS = ["the budget", "the merger", "hiring", "the audit", "the launch", "security", "the roadmap",
          "the migration", "pricing", "the outage", "the redesign", "training", "the contract", "travel"]
FIRST = ("Mara Tobin Elise Rafael Ingrid Omar Nadia Viktor Lena Hugo Priya Sven Aiko Dario Fiona Kofi Ilse "
         "Mateo Yara Bruno Celia Anton Greta Idris Jonas Keiko Luca Mina Nils Olga Pavel Rosa Sami Talia").split()


def pseudo_word(rng, syl=None):
    n = syl or rng.choice([2, 2, 3])
    w = "".join(rng.choice(_C) + rng.choice(_V) for _ in range(n)) + rng.choice(_END)
    return w.capitalize()


def person(rng):
    first = rng.choice(FIRST) if rng.random() < 0.5 else pseudo_word(rng, 2)
    return first + " " + pseudo_word(rng)


def date(rng):
    return "%s %d, %d" % (rng.choice(MONTHS), rng.randint(1, 28), rng.randint(1900, 2030))


def number(rng):
    return str(rng.choice([rng.randint(2, 99), rng.randint(100, 9999), rng.randint(10000, 999999),
                           2 ** rng.randint(4, 16)]))


def code(rng):
    L = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "".join(rng.choice(L) for _ in range(2)) + "-" + str(rng.randint(100, 9999))


def room(rng):
    return rng.choice("ABCDEFGH") + "-" + str(rng.randint(100, 999))


def word_value(rng):
    return rng.choice(WORDS) if rng.random() < 0.3 else pseudo_word(rng)


# template: (key_fn, value_fn, fact "{k}/{v}", question "{k}")
TEMPLATES = [
    (lambda r: pseudo_word(r), word_value, "The code name of project {k} is {v}.", "What is the code name of project {k}?"),
    (lambda r: (r.choice(PARAMS), pseudo_word(r)), number, "The {k0} for the {k1} service is {v}.",
     "What is the {k0} for the {k1} service?"),
    (person, date, "{k} was born on {v}.", "When was {k} born?"),
    (lambda r: pseudo_word(r), code, "The access code for the {k} vault is {v}.", "What is the access code for the {k} vault?"),
    (lambda r: (r.choice(JOBS), pseudo_word(r) + " " + r.choice(["Labs", "Systems", "Group", "Works", "Partners"])),
     person, "The chief {k0} of {k1} is {v}.", "Who is the chief {k0} of {k1}?"),
    (lambda r: (r.choice(TOPICS), r.choice(MONTHS)), room, "The meeting about {k0} in {k1} takes place in room {v}.",
     "In which room does the meeting about {k0} in {k1} take place?"),
    (lambda r: pseudo_word(r), lambda r: pseudo_word(r), "The capital of the province of {k} is {v}.",
     "What is the capital of the province of {k}?"),
]


def make_fact(rng, used_keys, quote_p=0.0):
    for _ in range(50):
        ti = rng.randrange(len(TEMPLATES))
        kf, vf, fact, q = TEMPLATES[ti]
        k = kf(rng)
        key = (ti, k if isinstance(k, str) else tuple(k))
        if key in used_keys:
            continue
        used_keys.add(key)
        v = vf(rng)
        kw = {"k": k} if isinstance(k, str) else {"k0": k[0], "k1": k[1]}
        vs = ('"%s"' % v) if rng.random() < quote_p else v
        return {"fact": fact.format(v=vs, **kw), "question": q.format(**kw), "value": v, "template": ti}
    raise RuntimeError("no fresh key")


class Pool:
    """Source text, pre-split. prose: list of documents, each a list of sentence pieces (each
    starting with a space). lines: list of files (path, [(lineno, piece)]) with non-empty lines."""

    def __init__(self, prose, lines):
        self.prose, self.lines = prose, lines


def split_sentences(text):
    """Plain text -> sentences (strings without leading/trailing space)."""
    out = []
    for para in text.replace("\r", "").split("\n\n"):
        para = " ".join(para.split())
        if not para:
            continue
        cur = []
        for w in para.split(" "):
            cur.append(w)
            if (w.endswith(".") or w.endswith("?") or w.endswith("!") or w.endswith(":")) and len(cur) >= 4 \
                    or len(cur) >= 60:
                out.append(" ".join(cur))
                cur = []
        if cur:
            out.append(" ".join(cur))
    return out


def text_lines(text, maxlen=200):
    out = []
    for i, ln in enumerate(text.replace("\r", "").split("\n")):
        ln = ln.rstrip().replace("\t", "    ")
        if ln.strip():
            out.append((i + 1, ln[:maxlen].rstrip()))
    return out


def build_doc(rng, pool, style, budget, enc, size, n_needles, n_questions, quote_p=0.0, depths=None,
              code_comments=False):
    """Return dict(pieces=[...] (document part, HEAD included), qas=[(q_piece_str, answer_str)],
    needles=[...]). style: 'page' or 'line'. budget: size units for the passages."""
    passages = []  # list of (marker_str, [body pieces])
    used = 0
    if style == "page":
        page = rng.randint(1, 400)
        while used < budget:
            doc = rng.choice(pool.prose)
            i = rng.randrange(max(1, len(doc) - 4))
            while i < len(doc) and used < budget:
                n = rng.randint(2, 9)
                body = doc[i:i + n]
                i += n
                if not body:
                    break
                mk = "[p. %d]" % page
                page += 1
                sz = size(enc(mk)) + sum(size(b) for b in body) + 1
                passages.append([mk, list(body)])
                used += sz
    else:
        while used < budget:
            path, lines = rng.choice(pool.lines)
            if not lines:
                continue
            i = rng.randrange(max(1, len(lines) - 8))
            n = rng.randint(20, 400)
            for (ln, piece) in lines[i:i + n]:
                if used >= budget:
                    break
                mk = "[%s:%d]" % (path, ln)
                passages.append([mk, [piece], path, ln])
                used += size(enc(mk)) + size(piece) + 1
    # plant needles
    keys = set()
    facts = [make_fact(rng, keys, quote_p) for _ in range(n_needles)]
    npass = len(passages)
    if depths is None:
        depths = [rng.random() for _ in facts]
    for f, d in zip(facts, depths):
        j = min(npass - 1, int(d * npass))
        p = passages[j]
        if style == "page":
            pos = rng.randint(0, len(p[1]))
            p[1].insert(pos, enc(" " + f["fact"]))
            f["marker"] = p[0][1:-1]
        else:
            # a new line right after line j, numbered ln+1; later lines of the same file shift by one
            path, ln = p[2], p[3]
            txt = f["fact"]
            if code_comments:
                txt = rng.choice(["/* %s */", "// %s", "# %s", " * %s"]) % txt
            mk = "[%s:%d]" % (path, ln + 1)
            new = [mk, [enc(" " + txt)], path, ln + 1]
            k = j + 1
            while k < len(passages) and len(passages[k]) == 4 and passages[k][2] == path and passages[k][3] > ln:
                q = passages[k]
                q[3] += 1
                q[0] = "[%s:%d]" % (path, q[3])
                k += 1
            passages.insert(j + 1, new)
            npass += 1
            f["passage_obj"] = new
    if style == "line":
        for f in facts:
            f["marker"] = f.pop("passage_obj")[0][1:-1]
    pieces = [enc(HEAD)]
    for p in passages:
        pieces.append(enc(p[0]))
        pieces.extend(p[1])
        pieces.append(enc("\n"))
    order = list(range(len(facts)))
    rng.shuffle(order)
    qas = []
    for qi in order[:n_questions]:
        f = facts[qi]
        qas.append(("<|question|>" + f["question"] + "\n<|answer|>", "%s [%s]" % (f["value"], f["marker"])))
    return {"pieces": pieces, "qas": qas, "facts": facts}
