"""The ten garment categories and the mapping of a shop's wording onto them."""

from __future__ import annotations

import re
import unicodedata

CATEGORIES = (
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
)

# A shop's wording names its garment by a head noun, which other garment words may modify: in
# English the head comes last ("T-shirt dress", "Shirt dress", "Dress shirts" as one compound), in
# French, Italian and Spanish first ("Robe t-shirt", "Giacca di jeans"). So every phrase of the
# lexicon is found in the text (longest first at each word), and the head is the last English one,
# unless a word of another language names a garment (an English loanword there only modifies).
# "Long sleeve" turns a t-shirt or a shirt (or a bare "top") into a longsleeve; words for things that
# are not garments of the ten categories (bags, socks, bras, belts...) as the head give no category
# at all, rather than the category of the garment word beside them ("Shoe bags", "Dress socks").

LONG_SLEEVE = "long sleeve"  # a modifier, not a category
NEUTRAL = "neutral"  # a phrase that names nothing, taken whole so that its words name nothing either
NOT_A_GARMENT = "not a garment"


def _entries(category: str, *phrases: str) -> dict[str, str]:
    return {phrase: category for phrase in phrases}


ENGLISH: dict[str, str] = {
    **_entries("shirt", "dress shirt", "dress shirts", "shirt", "shirts", "blouse", "blouses", "overshirt"),
    **_entries("pants", "dress pants", "dress trousers", "pants", "trousers", "trouser", "jeans", "jean", "chinos", "chino",
               "leggings", "legging", "joggers", "jogger", "sweatpants", "trackpants", "track pants", "cargo pants", "slacks"),
    **_entries("shoes", "dress shoes", "dress boots", "dress sandals", "shoes", "shoe", "sneakers", "sneaker", "trainers", "trainer",
               "boots", "boot", "sandals", "sandal", "loafers", "loafer", "heels", "pumps", "mules", "flip flops", "espadrilles",
               "footwear", "ballet flats", "slippers", "clogs"),
    **_entries("longsleeve", "sweat shirt", "sweat shirts", "sweatshirts", "sweatshirt", "sweaters", "sweater", "jumpers", "jumper",
               "pullovers", "pullover", "hoodies", "hoodie", "hoody", "cardigans", "cardigan", "knitwear",
               "longsleeves", "longsleeve"),  # not "jersey": a fabric ("Jersey tops")
    **_entries(LONG_SLEEVE, "long sleeves", "long sleeve", "long sleeved"),
    **_entries("t-shirt", "t shirts", "t shirt", "tshirts", "tshirt", "tee shirts", "tee shirt", "tees", "tee"),
    **_entries("outwear", "outerwear", "outwear", "coats", "coat", "jackets", "jacket", "parkas", "parka", "blazers", "blazer",
               "anoraks", "anorak", "gilets", "gilet", "raincoats", "raincoat", "windbreakers", "windbreaker", "trench",
               "puffer", "bomber"),
    **_entries("shorts", "shorts", "bermudas", "bermuda", "swim shorts"),  # not "short": a length ("Jeans (Short)")
    **_entries("skirt", "skirts", "skirt"),
    **_entries("dress", "dresses", "dress", "gowns", "gown"),
    **_entries("hat", "hats", "hat", "caps", "cap", "beanies", "beanie", "headwear", "beret", "bucket hat", "fedora"),
    **_entries(NEUTRAL, "cap sleeve", "cap sleeves", "short sleeve", "short sleeves", "short sleeved", "boot cut", "bootcut",
               "tops", "top", "tie dye", "tie dyed", "parachute", "parachutes",
               "pull on", "pull ons"),  # "Pull-On Jeans": a fit, not the French "pull" (a jumper)
    **_entries(NOT_A_GARMENT, "bag", "bags", "handbag", "handbags", "backpack", "backpacks", "wallet", "wallets", "sock", "socks",
               "tights", "pantyhose", "bra", "bras", "bralette", "underwear", "boxer", "boxers", "boxer shorts", "briefs", "lingerie",
               "care", "horn", "laces", "shoelaces", "insoles", "box", "hanger", "hangers", "tie", "ties", "scarf", "scarves",
               "belt", "belts", "glove", "gloves", "jewellery", "jewelry", "accessories", "sunglasses", "umbrella",
               "gift card", "gift cards", "perfume",
               # English robes are worn after a bath, not the French "robe" (a dress)
               "bath robe", "bath robes", "bathrobe", "bathrobes", "dressing gown", "dressing gowns", "robe de chambre",
               "robes de chambre", "kimono robe", "kimono robes"),
}

# German, French, Spanish, Italian, Dutch, Polish, Swedish (accents removed, as the text is). Left
# out: words that are also common English or brand names ("Rock", "Hose", "Pet", "Kappa").
OTHER_LANGUAGES: dict[str, str] = {
    **_entries("dress", "kleid", "kleider", "robe", "robes", "vestido", "vestidos", "abito", "abiti", "vestito", "vestiti",
               "jurk", "jurken", "sukienka", "sukienki", "klanning", "klanningar"),
    **_entries("skirt", "rocke", "roecke", "jupe", "jupes", "falda", "faldas", "gonna", "gonne", "rok", "rokken",
               "spodnica", "spodnice", "kjol", "kjolar"),
    **_entries("pants", "hosen", "pantalon", "pantalons", "pantalones", "pantaloni", "broek", "broeken", "spodnie",
               "byxor", "byxa"),
    **_entries("shorts", "kurze hose", "kurze hosen", "pantalones cortos", "pantaloncini", "korte broek", "spodenki"),
    **_entries("shirt", "hemd", "hemden", "bluse", "blusen", "chemise", "chemises", "chemisier", "chemisiers", "camisa",
               "camisas", "blusa", "blusas", "camicia", "camicie", "overhemd", "overhemden", "koszula", "koszule", "skjorta",
               "skjortor"),
    **_entries("t-shirt", "camiseta", "camisetas", "maglietta", "magliette", "koszulka", "koszulki"),
    **_entries("longsleeve", "strickjacke", "strickjacken", "pulli", "pull", "pulls", "sudadera", "sudaderas", "maglione",
               "maglioni", "felpa", "felpe", "trui", "truien", "sweter", "swetry", "bluza", "bluzy", "troja", "trojor"),
    **_entries(LONG_SLEEVE, "langarm", "langarmshirt", "langarmshirts", "manches longues", "manche longue", "manga larga",
               "manica lunga", "lange mouwen", "dlugi rekaw", "langarmad"),
    **_entries("outwear", "jacke", "jacken", "mantel", "maentel", "veste", "vestes", "manteau", "manteaux", "blouson",
               "blousons", "chaqueta", "chaquetas", "abrigo", "abrigos", "cazadora", "cazadoras", "giacca", "giacche",
               "cappotto", "cappotti", "giubbotto", "giubbotti", "jas", "jassen", "jasje", "kurtka", "kurtki", "plaszcz",
               "plaszcze", "jacka", "jackor"),
    **_entries("shoes", "schuhe", "schuh", "stiefel", "turnschuhe", "chaussures", "baskets", "bottes", "sandales", "zapatos",
               "zapatillas", "botas", "sandalias", "scarpe", "stivali", "sandali", "schoenen", "laarzen", "buty", "skor",
               "stovlar"),
    **_entries("hat", "hut", "hute", "huete", "mutze", "mutzen", "muetze", "muetzen", "kappe", "chapeau", "chapeaux",
               "casquette", "casquettes", "bonnet", "bonnets", "sombrero", "sombreros", "gorra", "gorras", "gorro", "cappello",
               "cappelli", "berretto", "hoed", "hoeden", "muts", "mutsen", "czapka", "czapki", "hatt",
               "hattar", "mossa", "mossor"),
    **_entries(NOT_A_GARMENT, "tasche", "taschen", "sac", "sacs", "bolso", "bolsos", "borsa", "borse", "tas", "tassen",
               "torba", "torebki", "vaska", "vaskor", "socken", "strumpfe", "chaussettes", "calcetines", "calzini", "sokken",
               "skarpetki", "strumpor", "bh", "soutien gorge", "sujetador", "reggiseno", "unterwasche", "sous vetements",
               "ropa interior", "intimo", "ondergoed", "bielizna", "underklader", "gurtel", "ceinture", "cinturon",
               "cintura", "riem", "pasek", "skarp", "schal", "echarpe", "bufanda", "sciarpa", "sjaal", "szalik", "halsduk"),
}

# German joins words into one, its head last: "Sommerkleid", "Jeansjacke", "Handtasche". A word the
# lexicon does not know is named by the longest of these it ends with, after a stem of at least
# four letters (not "chosen", "shut"); one of eight letters or more, itself a compound, names the
# word alone too ("Handschuhe" are gloves, not shoes). Heads that end common English words are
# left to the plural ("Röcke", not "Rock": shamrock, punkrock), and such words the lexicon takes
# whole ("parachute" is not a hat). The compound is a noun like an English one: where the wording
# names two, the last is the head ("Parachute pants"), unless a preposition came between.
GERMAN_COMPOUND_HEADS: dict[str, str] = {
    **_entries("dress", "kleid", "kleider"),
    **_entries("skirt", "rocke", "roecke", "minirock", "maxirock", "midirock", "jeansrock", "faltenrock", "lederrock",
               "bleistiftrock", "tullrock", "tuellrock", "wickelrock", "strickrock", "plisseerock", "hosenrock",
               "cordrock", "tellerrock", "stufenrock", "spitzenrock", "satinrock"),
    **_entries("pants", "hose", "hosen", "jeans"),
    **_entries("shorts", "shorts", "badehose", "badehosen"),
    **_entries("shirt", "hemd", "hemden", "bluse", "blusen"),
    **_entries("longsleeve", "pullover", "pulli", "pullis", "strickjacke", "strickjacken", "langarmshirt", "langarmshirts"),
    **_entries("outwear", "jacke", "jacken", "mantel", "maentel", "parka", "parkas"),  # not "Weste": a vest may be knitwear
    **_entries("shoes", "schuh", "schuhe", "stiefel", "stiefeletten", "sandalen", "sneaker", "sneakers", "pumps"),
    **_entries("hat", "hut", "hute", "huete", "mutze", "mutzen", "muetze", "muetzen", "kappe", "kappen"),
    **_entries(NOT_A_GARMENT, "tasche", "taschen", "handschuh", "handschuhe", "socken", "strumpfe", "struempfe",
               "strumpfhose", "strumpfhosen", "unterhose", "unterhosen", "miederhose", "miederhosen", "bikinihose",
               "bikinihosen", "boxershorts", "unterhemd", "unterhemden", "bademantel",
               "bademaentel", "morgenmantel", "morgenmaentel", "gurtel", "guertel", "schal", "schals"),
}
_COMPOUND_STEM = 4
_COMPOUND_ALONE = 8

_LEXICON: dict[str, tuple[str, bool]] = {
    **{phrase: (category, True) for phrase, category in ENGLISH.items()},
    **{phrase: (category, False) for phrase, category in OTHER_LANGUAGES.items()},
}
_LONGEST = max(len(phrase.split()) for phrase in _LEXICON)
# A garment joined to its material, style or extras by a preposition is the head: "Giacca di jeans",
# "Robe de soirée", "Midi dress with belt" (a product's name as a breadcrumb's last level).
_PREPOSITIONS = frozenset({"with", "di", "de", "del", "della", "da", "en", "a", "in", "aus", "van", "mit", "avec", "con", "met", "med", "z"})
# Parts of a name that lists several things ("Shoes & Accessories", "Hats, Scarves & Gloves").
_LIST = re.compile(r"\s*(?:&|\+|,|/|\band\b|\bund\b|\bet\b|\by\b|\be\b|\ben\b|\boch\b|\bi\b)\s*", re.I)
_TOPS = frozenset({"t-shirt", "shirt", NEUTRAL})
# Letters NFKD does not take apart.
_LETTERS = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d"})


def _words(text: str) -> list[str]:
    """Lower-case words without accents; every run of other characters is a break."""
    plain = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^0-9a-z]+", " ", plain).split()


def _phrases(words: list[str]) -> list[tuple[str, str, bool]]:
    """(phrase, category, whether its language puts the head last: English, German compounds) of
    the lexicon in the words, longest first at each word, and the German compounds among them."""
    found, index, described = [], 0, False
    while index < len(words):
        for size in range(min(_LONGEST, len(words) - index), 0, -1):
            phrase = " ".join(words[index : index + size])
            if phrase in _LEXICON and (not described or _LEXICON[phrase][0] == LONG_SLEEVE):
                found.append((phrase, *_LEXICON[phrase]))
                index += size
                break
        else:
            if not described and (category := _compound_head(words[index])):
                found.append((words[index], category, True))
            elif words[index] in _PREPOSITIONS and any(category not in (NEUTRAL, LONG_SLEEVE) for _, category, _ in found):
                # "giacca di jeans": what follows describes the garment already named; only its
                # sleeves still count ("T-shirt à manches longues").
                described = True
            index += 1
    return found


def head_category(text: str | None) -> str | None:
    """The category the wording's head noun names, NOT_A_GARMENT, or None when it names nothing. A
    list ("Shirts & Ties") is named by its first garment: a shop lists its main things first."""
    if not text:
        return None
    heads = [_head(part) for part in _LIST.split(str(text)) if part.strip()]
    garments = [head for head in heads if head in CATEGORIES]
    return garments[0] if garments else NOT_A_GARMENT if NOT_A_GARMENT in heads else None


def _compound_head(word: str) -> str | None:
    if len(word) >= _COMPOUND_ALONE and word in GERMAN_COMPOUND_HEADS:
        return GERMAN_COMPOUND_HEADS[word]
    for start in range(_COMPOUND_STEM, len(word)):
        if word[start:] in GERMAN_COMPOUND_HEADS:
            return GERMAN_COMPOUND_HEADS[word[start:]]
    return None


def _head(text: str) -> str | None:
    found = _phrases(_words(text))
    nouns = [(category, english) for _, category, english in found if category not in (NEUTRAL, LONG_SLEEVE)]
    foreign = [category for category, english in nouns if not english]
    head = foreign[0] if foreign else nouns[-1][0] if nouns else None
    if any(category == LONG_SLEEVE for _, category, _ in found) and (head is None or head in _TOPS):
        return "longsleeve"
    return head


def normalise_category(text: str | None) -> str | None:
    """Map a shop's category wording ("T-Shirts", "Coats & Jackets", "Damen > Kleider") to one of
    CATEGORIES; wording that names none, or names something else (a bag, socks), gives None."""
    category = head_category(text)
    return category if category in CATEGORIES else None
