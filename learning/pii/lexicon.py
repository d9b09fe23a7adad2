"""The name lexicon (faker's per-locale name lists, offline) and the tokenizer of names."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from learning.language import word_list
from learning.pii.base import _EN_STREET_TYPES, _EN_STREET_TYPES_TITLE

# --------------------------------------------------------------------------- names

_LATIN_NAME = re.compile(r"^[A-Za-zÀ-ÖØ-öø-ÿĀ-žȘ-ț'’]+$")

# Name-lexicon entries that are also among the 10k most frequent English/German words
# (derived offline with wordfreq from faker's non-English/German locales): never a name
# on their own without a cue.
_AMBIGUOUS_FROM_OTHER_LOCALES = """
adler aller among an andrews apollo arab armstrong arts atlanta auch aus bach back bail ball
ban bann barber bare barnes barth bass bath bauch bauer baum bayer bean beard beck becker
beer bent benz berg berge bergen berger best beste beta birmingham bischof bite bitten black
blick block bock bond bones bonner booth bore bosch brand brands braun bravo breit brick
bridge bridges bright bruder buch bull burger bury bär bürger camp camps canal cant car
cares carpenter carrier cases chambers champagne chan chapman chen church clear close cock
comment company constant contractor convey cook costa cousin cousins cox crane cross cruise
curry da dach dam dar dare das dash dass date davidson davies davor day de deep den denk der
dick die din divine doe dom downs drum durham each eck edwards einer en engel engen engl
english es ey fair fall farmer faust fee feinen felder ferguson ferrari ferry field fields
fisch fischer fleck flood floor flowers font foot forbes forget fox freely frei freitag
fresh frisch frost fry fröhlich fuchs funk fürst gal gallen gamble gandhi garcia gates
gelder ging glass glasses glück good graf grand grande gras grau grey grill grob gross
grüner guard gun gut gute gärtner hacker hahn hammer hand harte hartmann hay heck heer heim
heiss held hell helle heller helm herbst herd herzog hills hirsch ho hofer hoffmann hofmann
holder hollywood holt hood hook hopkins horn house huber hug hull hurt ii ing ion jail
januar jenkins jerusalem jet johns johnston joke jung juni junk jäger kader kaufmann keller
kellner kenn kern key khan kick kidney killer kind kindle kiss klein klima klug knapp knight
koch kohl kopf kosten kraft krebs kuba kunde kurz könig la lad lage lamb lancaster lande
lang lange langer lanka lass lasse lassen law leber lehmann leider li lie lies lin lindner
linke lips list lo loan lopez lord lot low luxemburg lynch lyon maas mach made madrid maine
malen mall mangel mann mans mar marks mars martial marx masse master mate mayer mayor meer
meier meister merchant mick mies mio mir mist modi monk moon moore more morrison moss
mountain mozart muslim must mutti my mühle müller na nagel naja nazi nee nette neu neumann
ninja nord nur o'brien oak obama odd op orleans owe pace pages pal palm parent parks parts
pastor pauli paulus per peters petrus petty phillips pi pier pilz plaza pol poland pole pop
pope porto post potter power powers priest prinz put quartier rails ram rauch read reader
real reich reicher reif rein reine reis reiter renault richards richardson richter rim ring
ritter rivers roberts robertson room roots roth römer saga salat sales salmon salz san sang
sauber sauer savage schaden scharf schatz scheibe scherz schiller schmid schmidt schmitt
schmuck schneider scholz schon schreiber schröder schubert schuh schulz schwarz schweizer
schäfer schön schüler sellers sen sep server seven shah sharp shaw shields shine short silk
simmons sims singer singh small smart snow solar sole soo soon spain springer st stack stamm
stange stark staub stein steiner stern steuer stevens stock stolz story strand strauss
street strong sturm suits sur swift ta tage tan tank the thomson ties tone too tor tore
tours und uni uno us valid ver vi vogel volk vorm wage wagner wall walls walsh wang ware
warrior water waters watts way weber weeks weis weiss welch werd were westfalen white wiener
wies wild wilde wille wise wit wolff woods wu wunsch yang yoga yu zahn zimmer zimmermann zu
zürcher
"""

# English/German first names (faker en_*/de_* locales) that are common words, places,
# months, titles or abbreviations in English or German chat.
_WORDLIKE = word_list(
    """
    ab abb ace add admiral ah al alabama alberta alexandria alpha america angel angeles
    april arch archer arizona art asia atlas august author autumn baby baker banks baptist
    baron basel beat bee bell belle berlin berry bird bishop blessing bliss boss boston
    branch brain brown buck bud buddy burns bush butler cal cam can candy cannon canyon cap
    captain carry case cash chance champ charity cherry chin china chip christ christen
    christian cleveland cliff clay colonel columbia columbus comfort con cook cooper coral
    cord council crystal cuba dallas danish darin dawn del delta denver destiny diamond doc
    dock doctor doll dot drake drew duke early easter eben echo edit elder else era essence
    essex ever fairy faith fancy fate fed fern ferne fisher fleet florida ford forest forum
    foster france frank french friend gay general genesis geneva genie german ginger golden
    governor grace grant graves gray green grove guy hall halle ham handy harm harmony harsh
    hart haven heaven hence hill holland holly hope houston hung hunt hunter india indiana
    indie infant innocent ireland iris isis israel ivory ivy jade january jena job journey
    joy judge june junior justice kaiser karma kenya kiel king kit kitty lady lake lane
    lawyer le lean lemon less liberty line link little london lone long love loyal lucky mad
    magen mai major mal male man manila marine mark marry marsh marshal math mat may media
    melbourne melody memphis mentor mercy merry metro mile miles miller mills minor miracle
    missouri montana nail neo nevada noble north nova oma oral orange page paris park peace
    pearl peer penny pepper phoenix pink pleasant porsche porter press price prima prince
    princess queen raid rand raven reason red reed rice rich richmond ridge river rock rocky
    roll roma rome rose royal ruby rush saal sad sage said saint santa shade shepherd sie
    silver sincere sing sister skip sky smith sommer son spring star sterling stone storm
    summer sunday sunny sunshine tab tal te tea tennessee texas theres til till tiny tory
    toy trace treasure trinity true unique unknown urban van venice venus victory villa von
    wash washington west will wing winter wood worth york young von sie an man einer dann
    mal ab davon allen eben leider tage anders beste ernst lage rein tod per juli juni darin
    naja tor sage stein berg lasse uni tore bitten mist rand reine les kenn landen fern
    wende vorm dom dax lies malen pol wille ey brennen ferne helle ing made uno ver heide
    jung lang lange klein koch wolf engel sturm graf vogel fuchs hahn braun schwarz weiss
    weiß gross groß fischer bauer becker meister richter keller jäger ritter herzog bischof
    sonne mond stern liebe glück glueck kurz hans solange bett
    """
)

_DENY = frozenset(
    word_list(
        """
    monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday
    tonight montag dienstag mittwoch donnerstag freitag samstag sonntag heute morgen gestern
    january february march april may june july august september october november december
    januar februar märz maerz mai juni juli oktober dezember jira slack github gitlab docker
    kubernetes k8s aws azure gcp linux windows mac macos ios android python java javascript
    typescript rust golang go node npm pip react vue angular django flask postgres
    postgresql mysql redis kafka nginx apache terraform ansible jenkins grafana sentry
    notion confluence zoom teams outlook gmail google chrome firefox safari excel word
    powerpoint openai chatgpt gpt claude llama mistral gemini copilot discord whatsapp
    telegram signal bot admin user users team channel server client api sdk cli ui ux dev
    prod staging hello hi hey thanks thank ok okay yes no yeah nope lol sure please bitte
    danke hallo ja nein phone email mail website fax mobile tel date subject name address
    nan null none undefined
    adresse telefon betreff numpy pandas scipy pytest pytorch torch tensorflow keras sklearn
    jupyter conda venv poetry pydantic fastapi uvicorn gunicorn celery sqlalchemy alembic
    mypy ruff black flake8 pylint kubectl helm argocd istio prometheus loki tempo datadog
    splunk elastic kibana logstash webpack vite pnpm yarn eslint prettier babel nextjs nuxt
    svelte tailwind bootstrap jquery graphql grpc protobuf json yaml toml csv xml html css
    sql nosql mongodb sqlite lambda ec2 s3 rds cloudflare vercel netlify heroku
    supabase firebase stripe twilio sendgrid git gitea bitbucket circleci travis buildkite
    dependabot renovate sonarqube huggingface transformers peft lora qlora gguf ollama vllm
    llm rag
    """
    )
)

_STRONG_CUES = re.compile(
    r"(?:\bmy\s+name\s+is|\bname\s+is|\bmy\s+name'?s|\bname\s*[:=?]|\bhei(?:ß|ss)t|"
    r"\bnamed(?:\s+(?:him|her|them|it))?|\bcalled(?:\s+(?:him|her|them|it))?|"
    r"\bi\s+am\s+called|\bcall\s+me|\bthis\s+is|"
    r"\bi'?m|\bi\s+am|\bsigned|\bregards,?|\bcheers,?|\bbest,?|\bsincerely,?|\bthanks,|\b-{1,2}|"
    r"\bmein\s+name\s+ist|\bich\s+hei(?:ß|ss)e|\bich\s+bin|\bnennt?\s+mich|\bgrü(?:ß|ss)e,?|\blg,?|\bvg,?|\bmfg,?|"
    r"\bmr|\bmrs|\bms|\bmiss|\bmx|\bdr|\bprof|\bsir|\bmadam|\bherr|\bherrn|\bfrau|\bhr|\bfr|\bdear|\bliebe|\blieber)"
    r"\.?[ \t]*$",
    re.IGNORECASE,
)
_TITLE_CUE = re.compile(
    r"(?:\bmr|\bmrs|\bms|\bmiss|\bmx|\bdr|\bprof|\bsir|\bherr|\bherrn|\bfrau|\bhr|\bfr|\bname\s+is|\bname\s*:|"
    r"\bname\s*\?|\bnamed(?:\s+(?:him|her|them|it))?|\bcalled(?:\s+(?:him|her|them|it))?|\bhei(?:ß|ss)t|"
    r"\bmein\s+name\s+ist|\bich\s+hei(?:ß|ss)e|\bcall\s+me|\bnennt?\s+mich)\.?[ \t]*$",
    re.IGNORECASE,
)
_WEAK_CUES = re.compile(
    r"(?:\bhey|\bhi|\bhello|\bhiya|\byo|\bthanks|\bthank\s+you|\bthx|\bty|\bbye|\bmorning|\bevening|"
    r"\bask|\basked|\btell|\btold|\bsays|\bsaid|\bwrites|\bwrote|\breplied|\bsagt|\bsagte|\bmeint|'s\s+name|\bping|\bpinged|\bcc|\bemail|\bemailed|\bcall|\bcalled|\bmessage|\bdm|"
    r"\bkid|\bson|\bdaughter|\bwife|\bhusband|\bbrother|\bsister|\bfriend|\bcolleague|\bcoworker|"
    r"\bboss|\bmanager|\bpartner|\bkollege|\bkollegin|\bchef|\bchefin|\bintern|\btrainee|"
    r"\bteammate|\bpraktikant(?:in)?|\bazubi|\bthat\s+you|\bare\s+you|\bsee\s+you|"
    r"\bmeet|\bmet|\bwith|\bsee|\bsaw|\band|\bfrom|\bby|\bfor|\bto|\bwelcome|\bcongrats|\bsorry|\bdear|"
    r"\bhallo|\bmoin|\bservus|\bgrüß\s+dich|\bdanke|\bfrag|\bfrage|\bsag|\bsage|\bschreib|\bruf|\bmit|\bvon|\bfür|"
    r"\bund|\bbei|\bliebe|\blieber|\bhej|\bciao|"
    r"\btalked\s+to|\btalking\s+to|\bspoke\s+(?:to|with)|\bspeak\s+(?:to|with)|\bchatted\s+with|"
    r"\bmeeting\s+with|\bcall\s+with|\baccount\s+holder|\bübernimmt|\bvertritt|"
    r"\b(?:konto)?inhaber(?:in)?|\bfwd\s+from|\bforwarded\s+from|\bmessage\s+from|\bmail\s+from|"
    r"\bnachricht\s+von|\bgeht\s+an|\bging\s+an|\bgoes\s+to|\bdanke\s+an|\bdank\s+an|\blaut|"
    r"\baccording\s+to|\bpair\s+with|\bsync\s+with|\blunch\s+with|\bme\s+or|\bblame|\binvite|"
    r"\bgib|\bgebt|\bfrag\s+mal|\bfollow\s+up\s+with|\bbitte|\btermin\s+mit|\bwelcome|\bwillkommen(?:\s+im\s+team)?|"
    r"\bshoutout\s+to|\bkunde|\bkundin|@)[ \t,]*$",
    re.IGNORECASE,
)
_PERSON_OBJECT_AFTER = re.compile(
    r"\s+(?:bescheid|anrufen|zurückrufen|erreichen|einladen|informieren|anschreiben|"
    r"kontaktieren|fürs\s+\w+|zum\s+termin)\b",
    re.IGNORECASE,
)
_TALKED_AFTER = re.compile(
    r"\s+(?:gesprochen|telefoniert|geredet|geschrieben|getroffen|gechattet|abgesprochen|"
    r"about|über|wegen)\b",
    re.IGNORECASE,
)
_VOCATIVE_AFTER = re.compile(
    r",\s*(?:can|could|would|will|please|pls|you|u|i|we|do|did|are|is|have|thanks|thank|what|how|"
    r"where|when|why|kannst|könntest|bitte|hast|bist|wie|was|wo|wann|warum|danke)\b"
    # without the comma only a direct question to the person: "salla can you rebase"
    r"|\s+(?:can|could|would|will)\s+(?:you|u)\b|\s+(?:kannst|könntest|hast|bist)\s+du\b",
    re.IGNORECASE,
)
_LIST_WORDS = frozenset({"and", "und", "or", "oder", "&"})
_POSSESSIVE_PERSONAL = re.compile(
    r"['’]s\s+(?:e-?mail|address|adresse|number|phone|mobile|cell|account|birthday|wife|husband|"
    r"partner|girlfriend|boyfriend|mom|mum|mother|dad|father|kid|kids|son|daughter|brother|sister|"
    r"desk|office|laptop|calendar|manager|boss|team|idea|code|pr|commit|message|handy|nummer|"
    r"approval|permission|sign-off|signoff|feedback|input|okay|ok|review|ticket|task|"
    r"freigabe|meinung|rechner)\b",
    re.IGNORECASE,
)
_SPEAKER = re.compile(r"(?m)(?:^|(?<=\\n))[ \t]*([^\W\d_][\w'’-]{1,30}):[ \t]*(?=\S)")
_NOT_SPEAKERS = frozenset(
    word_list(
        """
        note notes error warning warn info debug todo fixme update edit question answer q a re
        fyi ps tldr tl;dr summary example output input result results step steps problem solution
        reason cause fix status bot user assistant system human ai admin mod server client
        subject from to cc bcc sent date time when where why how what who update hinweis frage
        antwort fehler beispiel lösung ergebnis
        """
    )
)
# words before a capitalised product rather than a person: "switched to Ripgrep"
_TOOL_CONTEXT = frozenset(
    word_list("to with via using use into onto from in on at by upgrade install the a an our my")
)
_COPULAS = frozenset({"is", "was", "has", "had", "got", "ist", "war", "hat", "hatte"})
_NAME_VERB_AFTER = re.compile(
    r"(?:'s|’s)?(?:\s+(?:just|also|already|still|finally|then|never|nur|auch|schon|noch|grad|gerade))?"
    r"\s+(hat\s+(?:\w+\s+){0,4}ge\w+(?:t|en|ed)\b|is\s+from|was\s+from|comes\s+from|is\s+out|is\s+off|is\s+sick|ist\s+(?:heute\s+)?krank|"
    r"and\s+i|and\s+me|und\s+ich|will|should|owns|covers|"
    r"is|was|has|had|lives|lived|said|says|began|spent|"
    r"listed|wrote|asked|told|kommt\s+aus|ist\s+aus|"
    r"went|got|thinks|likes|loves|hates|joined|knows|replied|pinged|messaged|mentioned|emailed|"
    r"called|texted|broke|left|quit|approved|merged|reviewed|wants|needs|"
    r"ist|war|hat|hatte|wohnt|sagt|sagte|arbeitet|meint|meinte|schreibt|schrieb|fragt|fragte|"
    r"kommt|kam|will|braucht|hat's|übernimmt|springt|kümmert|reply|respond|answer|confirm|agree|"
    r"from\s+(?:support|sales|marketing|hr|legal|finance|ops|it|accounting|billing)|"
    # any regular past tense and the modals: "Zhiwei restarted the pods", "Ife can't"
    r"[a-z]{2,}[^e\W]ed|[a-z]{2,}ied|[a-z]{3,}ed(?=\s+(?:the|a|an|it|me|us|them|my|our|that|this|to|up|out|in|on)\b)|"
    r"can|can't|cannot|could|couldn't|would|won't|did|didn't|does|doesn't|hasn't|isn't|wasn't|"
    r"'ll|’ll|'d|’d|"
    r"kann|konnte|muss|soll|wird|wollte)\b"
)
_LIST_SEP = re.compile(
    r"\s*(?:,|&|\band\b|\bund\b|\bor\b|\boder\b|/)\s*|\s*,\s*(?:and|und)\s+", re.IGNORECASE
)
_STREET_WORDS = frozenset(
    (
        _EN_STREET_TYPES
        + "|"
        + _EN_STREET_TYPES_TITLE.lower()
        + "|straße|strasse|str|weg|gasse|allee|platz"
    )
    .replace("\\", "")
    .split("|")
)
# never a name, even after "Herr"/"Frau"/"Mr" (where stop-word surnames are allowed)
_FUNCTION_WORDS = frozenset(
    word_list(
        """
    der die das den dem des ein eine einen einem einer und oder the a an and or of zu im am
    in mit ist is so wie als auch noch schon nicht not you your du sie er es ich
    """
    )
)
_CONTRACTION = re.compile(r"[^\W\d_]+['’](?:m|s|re|ve|ll|d|t)")
_CONNECTORS = frozenset(
    word_list(
        """
    van von de der den da di du del della des le la ten ter bin ibn al el mc st. dos das zu
    vom y
    """
    )
)
_TOKEN_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*\.?")


class _Either:
    """Membership in either of two sets (without building their union)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Collection[str], b: Collection[str]) -> None:
        self.a, self.b = a, b

    def __contains__(self, item: object) -> bool:
        return item in self.a or item in self.b

    def __iter__(self) -> Iterator[str]:
        yield from self.a
        yield from self.b

    def __len__(self) -> int:
        return len(self.a) + len(self.b)


_SURNAME_SHAPE = re.compile(
    r"..(?:ov|ova|ev|eva|yev|yeva|ovich|evich|ovna|evna|sky|ski|ska|skaya|wicz|vić|vic|ić|"
    r"sson|dóttir|dottir|poulos|escu|yan|enko|chuk|oğlu|oglu|ishvili|adze|auskas|aitis|aitė|"
    r"ienė|ová|ská|bekov|khanov|iev|ieva|inen|änen|anen|onen|ainen|äinen|ič|čič|šič)$"
)


@dataclass(frozen=True)
class NameLexicon:
    """First/last name sets (casefolded) and the subset of first names safe to take alone."""

    first: frozenset[str]
    last: frozenset[str]
    core_first: frozenset[str]
    ambiguous: frozenset[str]
    #: the part of ``ambiguous`` that is never a surname after a first name either
    #: (stop words, "will", "may", "winter", ...); frequent surnames such as "miller" or
    #: "song" are only in ``ambiguous``
    words: frozenset[str] = frozenset()
    #: the part of ``words`` that is a common surname and still one right after a first
    #: name ("stefanie schneider", "roderick grant"; not "will", "may", "lang")
    surname_words: frozenset[str] = frozenset()

    def not_surname(self, low: str) -> bool:
        """``low`` cannot be a surname right after a first name."""
        return low in self.words and low not in self.surname_words

    def with_extra(self, names: Iterable[str]) -> NameLexicon:
        extra = {p.casefold() for n in names for p in re.split(r"[\s-]+", n) if len(p) >= 2}
        return NameLexicon(
            first=self.first | extra,
            last=self.last,
            core_first=self.core_first | extra,
            ambiguous=self.ambiguous - extra,
            words=self.words - extra,
            surname_words=self.surname_words,
        )


def _stop_words() -> frozenset[str]:
    from spacy.lang.de.stop_words import STOP_WORDS as DE_STOP
    from spacy.lang.en.stop_words import STOP_WORDS as EN_STOP

    extra = word_list(
        """
    u ur r im ive youre dont cant wont thats ok okay lol pls plz thx ty btw idk imo tbh ya
    yep nope
    """
    )
    return frozenset(w.casefold() for w in (*EN_STOP, *DE_STOP, *extra))


@functools.cache
def stop_words() -> frozenset[str]:
    return _stop_words()


@functools.lru_cache(maxsize=65536)
def zipf(word: str) -> float:
    """Zipf frequency of a (casefolded) word in English or German, whichever is higher."""
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, "en"), zipf_frequency(word, "de"))


@functools.cache
def name_lexicon() -> NameLexicon:
    """Load faker's per-locale name lists (offline) into a :class:`NameLexicon` (cached)."""
    import faker.providers.person as person_pkg

    first: set[str] = set()
    last: set[str] = set()
    core: set[str] = set()
    for info in pkgutil.iter_modules(person_pkg.__path__):
        try:
            mod = importlib.import_module(f"faker.providers.person.{info.name}")
        except ImportError:  # pragma: no cover - a broken locale module
            continue
        provider = getattr(mod, "Provider", None)
        if provider is None:
            continue
        is_core = info.name.split("_")[0] in {"en", "de"}
        for attr in dir(provider):
            if not (attr.startswith(("first_", "last_")) and attr.endswith("names")):
                continue
            values = getattr(provider, attr)
            if not isinstance(values, (list, tuple, dict, set, frozenset)):
                continue
            target = first if attr.startswith("first") else last
            for value in values:
                if not isinstance(value, str):
                    continue
                for part in re.split(r"[\s-]+", value):
                    if len(part) >= 2 and _LATIN_NAME.match(part):
                        low = part.casefold()
                        target.add(low)
                        if is_core and target is first:
                            core.add(low)
    sw = stop_words()
    embedded = set(_AMBIGUOUS_FROM_OTHER_LOCALES.split())
    ambiguous = embedded | set(_WORDLIKE) | _DENY | sw
    ambiguous |= {w for w in first | last if len(w) <= 2}
    # never a surname after a first name either: "back", "ball"; but "singh", "hansen" can be
    words = frozenset(ambiguous - {w for w in embedded if w in last and zipf(w) < 4.3})
    # frequent English/German words that some locale lists as a name ("song", "pin")
    ambiguous |= {w for w in first | last if w not in core and zipf(w) >= 3.5}
    return NameLexicon(
        first=frozenset(first),
        last=frozenset(last),
        core_first=frozenset(core - ambiguous),
        ambiguous=frozenset(ambiguous),
        words=words,
        surname_words=frozenset(w for w in words & last if w not in sw and zipf(w) < 4.7),
    )


@dataclass(slots=True)
class _Tok:
    start: int
    end: int
    text: str
    low: str
    cap: bool
    sent_start: bool


_CODE = "\x00"


# "API-Key", "USB-Stick", "2FA-Code": the part after an acronym's hyphen is no name
_ACRONYM_BEFORE = re.compile(r"(?<![\w-])(?:[A-Z]{2,}|\w*\d\w*)$")


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        s, e = m.start(), m.end()
        word = m.group()
        if word.endswith(".") and len(word) > 2:  # keep the dot of initials ("J.")
            e -= 1
            word = word[:-1]
        lw = word.casefold()
        if (lw.endswith(("'s", "’s")) and len(lw) > 3) or lw.endswith(("'", "’")):
            cut = 2 if lw.endswith("s") else 1
            e -= cut
            word = word[:-cut]
            lw = lw[:-cut]
        j = s - 1
        while j >= 0 and text[j] in " \t\"'(«„“*_":
            j -= 1
        sent_start = j < 0 or text[j] in ".!?\n:;>"
        before = text[s - 1] if s else " "
        after = text[e : e + 2]
        if (
            before in "_/\\$="
            or (before == "-" and _ACRONYM_BEFORE.search(text, 0, s - 1) is not None)
            or (before == "." and s >= 2 and text[s - 2].isalnum())
            or after[:1] in {"_", "(", "/", "\\", "="}
            or (after[:1] == "." and after[1:2].isalpha())
        ):
            lw = _CODE + lw  # part of an identifier, path or call: never a name
        out.append(_Tok(s, e, word, lw, word[:1].isupper(), sent_start))
    return out


def _gap_ok(text: str, a: _Tok, b: _Tok) -> bool:
    """Two tokens belong to the same name: separated by one space (or a hyphen)."""
    gap = text[a.end : b.start]
    return gap in {" ", "-", ". ", "  "} and not (gap == ". " and len(a.text) > 2)
