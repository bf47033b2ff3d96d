"""Random IDs and docker's name generator for containers."""

from __future__ import annotations

import os
import random

_LEFT = ("admiring adoring affectionate agitated amazing angry awesome blissful bold boring brave busy charming "
         "clever compassionate competent condescending confident cool cranky crazy dazzling determined distracted "
         "dreamy eager ecstatic elastic elated elegant eloquent epic exciting fervent festive flamboyant focused "
         "friendly frosty funny gallant gifted goofy gracious great happy hardcore heuristic hopeful hungry infallible "
         "inspiring intelligent interesting jolly jovial keen kind laughing loving lucid magical modest musing "
         "mystifying naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic pensive practical "
         "priceless quirky quizzical recursing relaxed reverent romantic sad serene sharp silly sleepy stoic strange "
         "stupefied suspicious sweet tender thirsty trusting unruffled upbeat vibrant vigilant vigorous wizardly "
         "wonderful xenodochial youthful zealous zen").split()
_RIGHT = ("albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach bardeen bartik bassi "
          "bell benz bhabha bhaskara blackwell bohr booth borg bose boyd brahmagupta brattain brown carson cerf "
          "chandrasekhar chaplygin chatelet chatterjee chebyshev curie darwin davinci dijkstra dubinsky easley "
          "edison einstein elion engelbart euclid euler faraday feistel fermat fermi feynman franklin gagarin "
          "galileo gates gauss germain goldberg goldstine goodall hamilton hawking heisenberg hermann hodgkin "
          "hoover hopper hugle hypatia jackson jang jennings jepsen johnson joliot jones kalam kapitsa keller "
          "kepler khorana kilby kirch knuth kowalevski lalande lamarr lamport leakey leavitt lewin lichterman "
          "liskov lovelace lumiere mahavira margulis matsumoto maxwell mayer mccarthy mcclintock mclean mcnulty "
          "meitner mendel merkle mestorf mirzakhani montalcini moore morse moser murdock napier nash neumann "
          "newton nightingale nobel noether northcutt noyce panini pare pascal pasteur payne perlman pike "
          "poincare poitras proskuriakova ptolemy raman ramanujan ride ritchie robinson roentgen rosalind rubin "
          "saha sammet satoshi shamir shannon shaw shirley shockley sinoussi snyder solomon spence stonebraker "
          "sutherland swanson swartz swirles taussig tesla tharp thompson torvalds turing varahamihira vaughan "
          "villani visvesvaraya volhard wescoff wilbur wiles williams williamson wilson wing wozniak wright wu "
          "yalow yonath zhukovsky").split()


def new_id() -> str:
    """64 hex chars, like docker's container and exec IDs."""
    return os.urandom(32).hex()


def is_container_id(s: str) -> bool:
    """A full id as new_id() makes them."""
    return len(s) == 64 and all(ch in "0123456789abcdef" for ch in s)


def random_name() -> str:
    rng = random.SystemRandom()
    name = f"{rng.choice(_LEFT)}_{rng.choice(_RIGHT)}"
    if name == "boring_wozniak":
        return random_name()
    return name
