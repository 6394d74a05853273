"""Device profiles: the built-in geometry is REFERENCE.md's, bad files fail loudly, names resolve."""

from __future__ import annotations

import stat
import sys

import pytest
import yaml

from edgeaudio import profiles, registry
from edgeaudio.errors import ProfileError
from edgeaudio.hookspecs import hookimpl
from edgeaudio.profiles import ArrayProfile, TargetProfile

TARGETS = {"jetson-orin-nano", "jetson-agx-orin", "x86-gpu", "x86-cpu", "rpi5"}
ARRAYS = {"respeaker-4mic", "respeaker-6mic", "respeaker-usb", "minidsp-uma8", "matrix-voice", "mono", "starss-mic"}

SEEED_4MIC = {"name": "seeed-4mic-voicecard: bcm2835-i2s-ac10x-codec0 (hw:1,0)", "max_input_channels": 4}
SEEED_6MIC = {"name": "seeed-8mic-voicecard: bcm2835-i2s-ac10x-codec0 (hw:1,0)", "max_input_channels": 8}
RESPEAKER_USB = {"name": "ReSpeaker 4 Mic Array (UAC1.0): USB Audio (hw:2,0)", "max_input_channels": 6}
RESPEAKER_USB_1CH = {"name": "ReSpeaker 4 Mic Array (UAC1.0): USB Audio (hw:2,0)", "max_input_channels": 1}
UMA8 = {"name": "miniDSP UMA8: USB Audio (hw:3,0)", "max_input_channels": 8}
LAPTOP_MIC = {"name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "max_input_channels": 2}
HDMI_OUT = {"name": "HDA Intel PCH: HDMI 0 (hw:0,3)", "max_input_channels": 0}


@pytest.fixture(autouse=True)
def fresh_profiles():
    profiles.clear_cache()
    yield
    profiles.clear_cache()


# --- the built-in profiles -----------------------------------------------------------------------


def test_builtin_profiles_load_with_their_kinds():
    loaded = profiles.load_profiles()
    assert {n for n, p in loaded.items() if isinstance(p, TargetProfile)} == TARGETS
    assert {n for n, p in loaded.items() if isinstance(p, ArrayProfile)} == ARRAYS


def test_builtin_devices_dir_is_registered_through_the_hook():
    registered = registry.collect("register_profiles")
    assert any(path.replace("\\", "/").endswith("devices") for path in registered)


@pytest.mark.parametrize(
    "name, mic, position",
    [
        ("respeaker-4mic", 0, (-0.0405, 0.0, 0.0)),
        ("respeaker-4mic", 1, (0.0, 0.0405, 0.0)),
        ("respeaker-6mic", 0, (-0.0232, 0.0401, 0.0)),
        ("respeaker-6mic", 4, (0.0463, 0.0, 0.0)),
        ("respeaker-usb", 1, (0.0, -0.032, 0.0)),
        ("minidsp-uma8", 2, (0.037, 0.021, 0.0)),
        ("matrix-voice", 1, (-0.03813, 0.00358, 0.0)),
        ("matrix-voice", 6, (0.005, -0.03797, 0.0)),
    ],
)
def test_array_positions_match_reference(name, mic, position):
    array, _ = profiles.get_array(name)
    assert array.positions[mic] == position


@pytest.mark.parametrize(
    "name, channel_map, capture_channels, native_rate, num_mics",
    [
        ("respeaker-4mic", (0, 1, 2, 3), 4, 16000, 4),
        ("respeaker-6mic", (1, 2, 3, 4, 5, 6), 8, 16000, 6),
        ("respeaker-usb", (1, 2, 3, 4), 6, 16000, 4),
        ("minidsp-uma8", (1, 2, 3, 4, 5, 6, 7), 8, 48000, 7),
        ("matrix-voice", tuple(range(8)), 8, 48000, 8),
        ("mono", (0,), 1, 48000, 1),
    ],
)
def test_array_capture_settings_match_reference(name, channel_map, capture_channels, native_rate, num_mics):
    array, _ = profiles.get_array(name)
    assert array.channel_map == channel_map
    assert array.capture_channels == capture_channels
    assert array.native_rate == native_rate
    assert array.num_mics == num_mics
    assert array.positions_array().shape == (num_mics, 3)
    assert (array.positions_array()[:, 2] == 0).all()


@pytest.mark.parametrize(
    "name, backends, precisions",
    [
        ("jetson-orin-nano", ("tensorrt", "onnxruntime"), ("fp16", "int8", "fp32")),
        ("jetson-agx-orin", ("tensorrt", "onnxruntime"), ("fp16", "int8", "fp32")),
        ("x86-gpu", ("tensorrt", "onnxruntime"), ("fp16", "int8", "fp32")),
        ("x86-cpu", ("openvino", "onnxruntime"), ("int8", "fp32")),
        ("rpi5", ("onnxruntime", "openvino"), ("int8", "fp32")),
    ],
)
def test_target_preferences(name, backends, precisions):
    target, reason = profiles.get_target(name)
    assert (target.backends, target.precisions) == (backends, precisions)
    assert reason == f"using target '{name}' as named"


def test_profiles_are_frozen():
    target, _ = profiles.get_target("rpi5")
    with pytest.raises(AttributeError):
        target.threads = 99


# --- names and families --------------------------------------------------------------------------


def test_target_family_resolves_to_its_default():
    target, reason = profiles.get_target("jetson")
    assert target.name == "jetson-orin-nano"
    assert reason == "'jetson' is a family; using jetson-orin-nano (family default)"


@pytest.mark.parametrize(
    "devices, expected",
    [
        ([RESPEAKER_USB], "respeaker-usb"),
        ([LAPTOP_MIC, SEEED_6MIC], "respeaker-6mic"),
        ([SEEED_4MIC, RESPEAKER_USB], "respeaker-4mic"),  # the default wins when both are plugged in
    ],
)
def test_array_family_prefers_the_connected_variant(devices, expected):
    array, reason = profiles.get_array("respeaker", live_devices=devices)
    assert array.name == expected
    assert "matches connected device" in reason and expected in reason


@pytest.mark.parametrize("devices", [[], [LAPTOP_MIC], [RESPEAKER_USB_1CH]])
def test_array_family_without_a_match_uses_the_default(devices):
    array, reason = profiles.get_array("respeaker", live_devices=devices)
    assert array.name == "respeaker-4mic"
    assert reason == (
        "'respeaker' is a family; no connected device matches a respeaker variant, "
        "using respeaker-4mic (family default)"
    )


def test_missing_sounddevice_counts_as_no_devices(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    assert profiles.query_live_devices() == []
    assert profiles.get_array("respeaker")[0].name == "respeaker-4mic"


def test_unknown_name_lists_known_names():
    with pytest.raises(ProfileError) as info:
        profiles.get_target("jetson-nano-classic")
    message = str(info.value)
    assert "unknown compute target 'jetson-nano-classic'" in message
    assert all(name in message for name in TARGETS)
    assert info.value.exit_code == 2


def test_array_name_given_as_target_says_so():
    with pytest.raises(ProfileError, match="'respeaker-4mic' is a microphone array, not a compute target"):
        profiles.get_target("respeaker-4mic")


def test_live_devices_pair_with_the_richest_fitting_profile():
    matched = profiles.match_live_devices([RESPEAKER_USB, UMA8, LAPTOP_MIC, HDMI_OUT, RESPEAKER_USB_1CH])
    names = [profile.name if profile else None for _, profile in matched]
    assert names == ["respeaker-usb", "minidsp-uma8", "mono", None, "mono"]
    assert matched[0][0] is RESPEAKER_USB


# --- invalid files -------------------------------------------------------------------------------

VALID_ARRAY = {
    "kind": "array",
    "family": "test-rig",
    "description": "two mics 10 cm apart",
    "family_default": True,
    "positions": [[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0]],
    "channel_map": [0, 1],
    "native_rate": 16000,
    "capture_channels": 2,
    "sample_format": "int16",
    "portaudio_pattern": "Test Rig",
}


def _write(tmp_path, name, fields=None, text=None):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(fields, sort_keys=False))
    return path


def _changed(**changes):
    fields = {**VALID_ARRAY, **changes}
    return {key: value for key, value in fields.items() if value is not None}


def test_a_valid_extra_profile_loads(tmp_path):
    _write(tmp_path, "test-rig", VALID_ARRAY)
    array = profiles.load_profiles([tmp_path])["test-rig"]
    assert array.positions == ((-0.05, 0.0, 0.0), (0.05, 0.0, 0.0))
    assert array.path == str(tmp_path / "test-rig.yaml")


@pytest.mark.parametrize(
    "fields, expected",
    [
        (_changed(native_rate="abc"), "field 'native_rate' must be a positive integer, got 'abc'"),
        (_changed(capture_channels=True), "field 'capture_channels' must be a positive integer, got True"),
        (_changed(native_rate=None), "missing field 'native_rate'"),
        ({**VALID_ARRAY, "natve_rate": 16000}, "unknown field 'natve_rate'"),
        (_changed(channel_map=[0, 2]), "field 'channel_map' index 2 is out of range for capture_channels 2"),
        (_changed(channel_map=[0]), "field 'channel_map' lists 1 channels for 2 positions"),
        (_changed(channel_map=[1, 1]), "field 'channel_map' must be a non-empty list of distinct"),
        (_changed(positions=[[-50, 0, 0], [50, 0, 0]]), "field 'positions' must be in metres"),
        (_changed(positions=[[0.1, 0.0], [0.0, 0.1]]), "field 'positions' must be a list of [x, y, z]"),
        (_changed(sample_format="s32le"), "field 'sample_format' must be one of int16, int24, int32, float32"),
        (_changed(portaudio_pattern="(unclosed"), "field 'portaudio_pattern' must be a valid regular expression"),
        (_changed(family_default="yes please"), "field 'family_default' must be true or false"),
        (_changed(kind="speaker"), "field 'kind' must be 'target' or 'array', got 'speaker'"),
        (_changed(family_default=False), "field 'family_default': family 'test-rig' has no default (test-rig)"),
    ],
)
def test_invalid_array_names_file_and_field(tmp_path, fields, expected):
    path = _write(tmp_path, "test-rig", fields)
    with pytest.raises(ProfileError) as info:
        profiles.load_profiles([tmp_path])
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"backends": ["tensorrt", "coreml"]}, "field 'backends' must be a list of distinct names among"),
        ({"backends": ["onnxruntime", "onnxruntime"]}, "field 'backends' must be a list of distinct names"),
        ({"precisions": []}, "field 'precisions' must be a list of distinct names among fp32, fp16, int8"),
        ({"arch": "armv7l"}, "field 'arch' must be one of aarch64, x86_64, got 'armv7l'"),
        ({"memory_gb": -1}, "field 'memory_gb' must be a positive number, got -1"),
        ({"family_default": True}, "field 'family_default': family 'rpi' has more than one default (rpi5, rpi6)"),
    ],
)
def test_invalid_target_names_file_and_field(tmp_path, changes, expected):
    with open(profiles.get_target("rpi5")[0].path) as builtin:
        fields = {**yaml.safe_load(builtin), "family_default": False, **changes}
    path = _write(tmp_path, "rpi6", fields)
    with pytest.raises(ProfileError) as info:
        profiles.load_profiles([path])
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_unknown_field_suggests_the_right_one(tmp_path):
    _write(tmp_path, "test-rig", {**VALID_ARRAY, "natve_rate": 16000})
    with pytest.raises(ProfileError) as info:
        profiles.load_profiles([tmp_path])
    assert "did you mean 'native_rate'?" in info.value.hint


def test_bad_yaml_syntax_names_file_and_line(tmp_path):
    path = _write(tmp_path, "test-rig", text="kind: array\nfamily: [respeaker\nnative_rate: 16000\n")
    with pytest.raises(ProfileError) as info:
        profiles.load_profiles([tmp_path])
    assert str(info.value).startswith(f"{path}: not valid YAML at line 3")


def test_field_given_twice_is_an_error(tmp_path):
    text = yaml.safe_dump(VALID_ARRAY, sort_keys=False) + "native_rate: 48000\n"
    path = _write(tmp_path, "test-rig", text=text)
    with pytest.raises(ProfileError, match="field 'native_rate' appears twice"):
        profiles.load_profiles([path])


def test_not_a_mapping_is_an_error(tmp_path):
    path = _write(tmp_path, "test-rig", text="- just\n- a list\n")
    with pytest.raises(ProfileError, match="a profile must be a mapping"):
        profiles.load_profiles([path])


def test_duplicate_profile_name_names_both_files(tmp_path):
    path = _write(tmp_path, "rpi5", VALID_ARRAY)
    with pytest.raises(ProfileError) as info:
        profiles.load_profiles([path])
    message = str(info.value)
    assert message.startswith(f"{path}: profile 'rpi5' is already defined by ")
    assert "rpi5.yaml" in message.split("defined by ")[1]


def test_registering_a_file_twice_is_not_a_duplicate():
    builtin = profiles.get_target("rpi5")[0].path
    assert profiles.load_profiles([builtin])["rpi5"].path == builtin


def test_bad_file_name_is_an_error(tmp_path):
    path = _write(tmp_path, "My Rig", VALID_ARRAY)
    with pytest.raises(ProfileError, match="the file name 'My Rig' is the profile name"):
        profiles.load_profiles([path])


def test_missing_registered_path_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match="registered profile path does not exist"):
        profiles.load_profiles([tmp_path / "nowhere"])


# --- plugins and caching -------------------------------------------------------------------------


def test_a_plugin_adds_profiles_through_the_hook(tmp_path, register_plugin):
    path = _write(tmp_path, "test-rig", VALID_ARRAY)

    class Plugin:
        @hookimpl
        def register_profiles(self, register):
            register(str(path))

    register_plugin(Plugin(), "test-profiles")
    array, reason = profiles.get_array("test-rig")
    assert array.num_mics == 2 and reason == "using array 'test-rig' as named"


def test_profiles_are_cached_until_cleared(tmp_path):
    path = _write(tmp_path, "test-rig", VALID_ARRAY)
    assert profiles.load_profiles([path])["test-rig"].native_rate == 16000
    _write(tmp_path, "test-rig", _changed(native_rate=48000))
    assert profiles.load_profiles([path])["test-rig"].native_rate == 16000
    profiles.clear_cache()
    assert profiles.load_profiles([path])["test-rig"].native_rate == 48000


# --- this host -----------------------------------------------------------------------------------


def _fake_root(tmp_path, model=None, tegra=False, nvidia0=False):
    for relative, present in (("etc/nv_tegra_release", tegra), ("dev/nvidia0", nvidia0)):
        if present:
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_text("")
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    return tmp_path


@pytest.mark.parametrize(
    "setup, machine, expected, reason_part",
    [
        ({"model": "NVIDIA Jetson AGX Orin Developer Kit"}, "aarch64", "jetson-agx-orin", "AGX Orin"),
        ({"model": "NVIDIA Jetson Orin Nano Developer Kit"}, "aarch64", "jetson-orin-nano", "Orin Nano"),
        ({"model": "NVIDIA Jetson Orin NX Developer Kit"}, "aarch64", "jetson-orin-nano", "family default"),
        ({"tegra": True}, "aarch64", "jetson-orin-nano", "unknown model"),
        ({"model": "Raspberry Pi 5 Model B Rev 1.0"}, "aarch64", "rpi5", "Raspberry Pi 5"),
        ({"model": "Raspberry Pi 4 Model B Rev 1.4"}, "aarch64", "rpi5", "not a Jetson"),
        ({"nvidia0": True}, "x86_64", "x86-gpu", "/dev/nvidia0"),
        ({}, "x86_64", "x86-cpu", "without an NVIDIA GPU"),
        ({}, "AMD64", "x86-cpu", "without an NVIDIA GPU"),
    ],
)
def test_host_target_from_fake_files(tmp_path, setup, machine, expected, reason_part):
    root = _fake_root(tmp_path, **setup)
    target, reason = profiles.host_target(root=root, machine=machine, path_env="")
    assert target.name == expected
    assert reason_part in reason


def test_host_target_finds_nvidia_smi_on_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    target, reason = profiles.host_target(root=tmp_path, machine="x86_64", path_env=str(bin_dir))
    assert target.name == "x86-gpu"
    assert "nvidia-smi" in reason


def test_host_target_unknown_architecture(tmp_path):
    with pytest.raises(ProfileError, match="architecture 'riscv64'"):
        profiles.host_target(root=tmp_path, machine="riscv64", path_env="")
