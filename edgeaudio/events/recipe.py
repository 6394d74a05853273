"""What the built-in event library is cut from: per class, the Debian-packaged recordings to use.

A class draws on several distinct recordings (sound themes, a drum kit, keyboard samples, game Foley
recorded from the real thing, voice-acted dialogue), so a split by recording still leaves held-out
sounds a model never heard. ``RECIPE`` is what editions 2 and later start from, and
``ADDED_IN_EDITION_2``, ``ADDED_IN_EDITION_3`` and ``REMOVED_IN_EDITION_3`` are what they change;
editions.py puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED = 0  # every random choice of a build (the order recordings are taken in, typed words) derives from it

DRUMS = "/usr/share/hydrogen/data/drumkits"
OPENSFX = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"
WIDELANDS = "/usr/share/games/widelands/data/sound"
MEGAGLEST = "/usr/share/games/megaglest"
LINCITY = "/usr/share/games/lincity-ng/sounds"
TORCS = "/usr/share/games/torcs/data/sound"
HEDGEWARS = "/usr/share/games/hedgewars/Data/Sounds"
SCORCHED3D = "/usr/share/games/scorched3d/data/globalmods/apoc/data/wav/misc"
SIMUTRANS = "/usr/share/games/simutrans/pak/sound"
QABCS = "/usr/share/qabcs/abcs/all/noises"


@dataclass(frozen=True)
class Source:
    """Where a class's recordings come from.

    kind "file": every file matching ``pattern`` (minus ``exclude``) is one recording.
    kind "opensfx": the named sounds of OpenTTD's OpenSFX catalogue, one recording each.
    kind "keystrokes": typing assembled from single-key samples, one recording per disjoint key set.

    ``group``: a regular expression whose match at the start of a file's name names its recording,
    for takes of one source in several files (``cow_ack1``, ``cow_die2`` -> ``cow``); they become
    one recording, so a split by recording never puts one take in training and another in the test.
    ``loop``: the files are loop samples (an engine at one speed); repeat each to this many seconds.
    """

    package: str
    pattern: str
    kind: str = "file"
    exclude: str = ""
    entries: tuple[str, ...] = ()
    group: str = ""
    loop: float = 0.0


RECIPE: dict[str, list[Source]] = {
    "alert": [
        Source("sound-theme-freedesktop", "/usr/share/sounds/freedesktop/stereo/*.oga",
               exclude="audio-|camera|screen-capture|trash|power-"),
        Source("yaru-theme-sound", "/usr/share/sounds/Yaru/stereo/*.oga", exclude="audio-volume|trash|power-"),
        Source("oxygen-sounds", "/usr/share/sounds/Oxygen-*.ogg", exclude="Window-|List-|Trash"),
        Source("deepin-sound-theme", "/usr/share/sounds/deepin/stereo/*.wav",
               exclude="screen-capture|camera|volume|trash|power|x-deepin"),
    ],
    "animal": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Sheep", "Cow", "Horse", "Tropical: Bird (1)", "Tropical: Bird (2)", "Tropical: Lion roar",
            "Tropical: Monkeys")),
        Source("etw-data", "/usr/share/games/etw/snd/dog.wav"),
    ],
    "crash": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Crash", "Explosion", "Road vehicle breakdown", "Train/ship breakdown", "Lumber mill: Crashing tree")),
        Source("heroes-sound-effects", "/usr/share/games/heroes/sfx/explo01.wav"),
        Source("moon-lander-data", "/usr/share/games/moon-lander/sounds/explosion2.wav"),
        Source("etw-data", "/usr/share/games/etw/snd/crash.wav"),
    ],
    "crowd": [
        Source("etw-data", "/usr/share/games/etw/crowd/*.wav"),
        Source("etw-data", "/usr/share/games/etw/snd/boou.wav"),
        Source("heroes-sound-effects", "/usr/share/games/heroes/sfx/foule*.wav"),
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=("Applause", "Oooh sound")),
    ],
    "cymbal": [
        *(Source("hydrogen-data", f"{DRUMS}/GMRockKit/{kind}*.wav") for kind in ("Crash", "Splash", "Ride", "24Ride")),
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Bell-*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Cymbal.flac"),
    ],
    "hihat": [
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Hat*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Hat_*.flac"),
    ],
    "horn": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Factory Whistle", "Steam train station departure", "Ship horn", "Ferry horn",
            "Diesel/electric train station departure", "Modern car horn")),
        Source("heroes-sound-effects", "/usr/share/games/heroes/sfx/claxon.wav"),
        Source("moon-lander-data", "/usr/share/games/moon-lander/sounds/honk.wav"),
    ],
    "keyboard": [Source("bucklespring-data", "/usr/share/buckle/wav/*.wav", "keystrokes")],
    "kick_drum": [
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Kick-*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Kick_*.flac"),
    ],
    "machinery": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Mining machinery", "Electric sparking", "Jackhammer", "Sawmill", "Lumber mill: Chainsaw",
            "Building bridge")),
    ],
    "music": [
        Source("pinball-data", "/usr/share/games/pinball/*/*.ogg"),
        Source("etw-data", "/usr/share/games/etw/music/*.wav"),
    ],
    "snare_drum": [
        Source("hydrogen-data", f"{DRUMS}/GMRockKit/Snare*.wav"),
        Source("hydrogen-data", f"{DRUMS}/TR808EmulationKit/808_Snare_*.flac"),
    ],
    "speech": [Source("fillets-ng-data-nl", "/usr/share/games/fillets-ng/sound/*/nl/*.ogg")],
    "vehicle": [
        Source("openttd-opensfx", OPENSFX, "opensfx", entries=(
            "Propeller plane start", "Early jet take off", "Helicopter", "Mach 1+ Jet take off",
            "Modern jet take off", "Toyland: Propeller plane take off", "Truck/old bus start, pull away",
            "Modern bus start", "Old bus start")),
        Source("etw-data", "/usr/share/games/etw/intro/engine.wav"),
    ],
}

_MEGAGLEST_UNITS = f"{MEGAGLEST}/techs/megapack/factions"
ADDED_IN_EDITION_2: dict[str, list[Source]] = {
    "animal": [
        Source("widelands-data", f"{WIDELANDS}/animals/*.ogg", group=r"[a-z]+\d?"),
        Source("widelands-data", f"{WIDELANDS}/farm/*.ogg", exclude="scythe", group=r"[a-z]+"),
        *(Source("megaglest-data", f"{MEGAGLEST}/tilesets/*/sounds/{animal}.*", group=r"[a-z]+")
          for animal in ("wolf", "chicken", "hawk", "rooster", "owl")),
        *(Source("megaglest-data", f"{MEGAGLEST}/techs/megapack/commondata/sounds/{animal}_*.wav", group=r"[a-z]+")
          for animal in ("cow", "pig")),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/persian/units/sheep/sounds/sheep*.wav", group=r"[a-z]+"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/persian/units/elephant/sounds/ele*.wav", group=r"[a-z]+"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/indian/units/bull/sounds/bull_*.wav", group=r"[a-z]+"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/indian/units/beehive/sounds/bee*.wav", group=r"[a-z]+"),
    ],
    "crash": [
        Source("torcs-data", f"{TORCS}/*crash*.wav", group=r"[a-z]+"),
        Source("hedgewars-data", f"{HEDGEWARS}/explosion.ogg"),
        Source("lincity-ng-data", f"{LINCITY}/Raze*.wav", group=r"[A-Za-z]+"),
    ],
    "crowd": [Source("lincity-ng-data", f"{LINCITY}/SportsCroud*.wav", group=r"[A-Za-z]+")],
    "machinery": [
        Source("widelands-data", f"{WIDELANDS}/atlanteans/saw/*.ogg", group=r"[a-z]+"),
        Source("widelands-data", f"{WIDELANDS}/sawmill/*.ogg", group=r"[a-z]+"),
        Source("widelands-data", f"{WIDELANDS}/mill/*.ogg", group=r"[a-z]+"),
        Source("widelands-data", f"{WIDELANDS}/stonecutting/stonecutter.ogg"),
        Source("widelands-data", f"{WIDELANDS}/metal/furnace.ogg"),
        *(Source("lincity-ng-data", f"{LINCITY}/{site}*.wav", group=r"[A-Za-z]+")
          for site in ("CoalMine", "OreMine", "IndustryHigh", "IndustryLight", "Mill")),
        Source("hedgewars-data", f"{HEDGEWARS}/drillgun.ogg"),
        Source("hedgewars-data", f"{HEDGEWARS}/pickhammer.ogg"),
        Source("megaglest-data", f"{_MEGAGLEST_UNITS}/tech/units/battle_machine/sounds/machine_walk*.wav",
               group=r"[a-z_]+[a-z]"),
    ],
    "vehicle": [
        Source("torcs-data", f"{TORCS}/*.wav", loop=3.0, group=r"[a-z0-9]+",
               exclude="axle|backfire|boom|crash|gear_change|locked|out_of_road|road-ride|skid|turbo"),
        *(Source("lincity-ng-data", f"{LINCITY}/{traffic}*.wav", group=r"[A-Za-z]+")
          for traffic in ("RailTrain", "TraficHigh", "TraficLow")),
        Source("hedgewars-data", f"{HEDGEWARS}/plane.ogg"),
    ],
}

# Edition 3: real horns (car horns, klaxons, a boat horn) where edition 2 had two whistles among eight
# recordings, and more machinery. scorched3d's carhorn1/2 and carhorn4/5/6 are one horn each at
# other lengths (spectra correlate at 0.97-0.99), so one file of each is taken.
ADDED_IN_EDITION_3: dict[str, list[Source]] = {
    "horn": [
        Source("scorched3d-data", f"{SCORCHED3D}/carhorn[134].wav"),
        Source("trophy-data", "/usr/share/games/trophy/sounds/carhorn.wav"),
        Source("btanks-data", "/usr/share/games/btanks/data/sounds/klaxon*.ogg", group=r"klaxon"),
        Source("micropolis-data", "/usr/share/games/micropolis/res/sounds/honkhonk-*.wav", group=r"honkhonk"),
        Source("simutrans-pak64", f"{SIMUTRANS}/boat-horn.wav"),
        Source("qabcs-data", f"{QABCS}/horn.ogg"),
    ],
    "machinery": [
        Source("simutrans-pak64", f"{SIMUTRANS}/buzzsaw.wav"),
        Source("simutrans-pak64", f"{SIMUTRANS}/jackhammer.wav"),
        Source("simutrans-pak64", f"{SIMUTRANS}/tree-cutting.wav"),
        Source("scorched3d-data", f"{SCORCHED3D}/factoryloop1.wav"),
        Source("qabcs-data", f"{QABCS}/excavator.ogg"),
    ],
}
# A factory whistle and a steam train's whistle are not horns: edition 3 leaves them out.
REMOVED_IN_EDITION_3 = {"horn": ("Factory Whistle", "Steam train station departure")}
