"""Settings, clock and fault arguments given in the wrong shape: refused by name, with what
to give instead; the right shapes keep working."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nvcf_emulator import Clock, EmulatorConfig
from nvcf_emulator.config import fixed_setting_error
from nvcf_emulator.domain.faults import Faults


@pytest.mark.parametrize("value", ["true", "no", 2, 0, None])
def test_an_on_off_setting_takes_a_bool_only(value: object) -> None:
    with pytest.raises(ValueError, match=r"always_async must be True or False"):
        EmulatorConfig(always_async=value)  # type: ignore[arg-type]


def test_a_string_for_an_on_off_setting_points_to_the_ini_words() -> None:
    with pytest.raises(ValueError, match="true/false") as info:
        EmulatorConfig(keep_staged="yes")  # type: ignore[arg-type]
    assert "keep_staged=True" in str(info.value)


def test_the_ini_still_reads_words_for_on_off_settings() -> None:
    parsed = EmulatorConfig.parse({"always_async": "yes", "admin_enabled": "off"})
    config = EmulatorConfig(**parsed)
    assert (config.always_async, config.admin_enabled) == (True, False)


@pytest.mark.parametrize(
    ("given", "hosts"),
    [
        ("api.example.com", ("api.example.com",)),
        ("a.example.com, b.example.com", ("a.example.com", "b.example.com")),
        (["a.example.com"], ("a.example.com",)),
        ((), ()),
    ],
)
def test_extra_api_hosts_shapes(given: object, hosts: tuple[str, ...]) -> None:
    assert EmulatorConfig(extra_api_hosts=given).extra_api_hosts == hosts  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["https://api.example.com", "api.example.com:8443", [1], 5])
def test_extra_api_hosts_that_are_no_host_names_are_refused(given: object) -> None:
    with pytest.raises(ValueError, match="extra_api_hosts"):
        EmulatorConfig(extra_api_hosts=given)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["https://x.example.com/v1", "https://x.example.com?a=1", "x.example.com"]
)
def test_api_base_url_must_be_an_origin(url: str) -> None:
    with pytest.raises(ValueError, match="api_base_url"):
        EmulatorConfig(api_base_url=url)


def test_api_base_url_with_a_trailing_slash_is_an_origin() -> None:
    assert EmulatorConfig(api_base_url="https://x.example.com/").api_base_url


@pytest.mark.parametrize("keys", [["nvapi-x"], "nvapi-x", {"nvapi-x": 1}])
def test_api_keys_must_map_keys_to_nca_ids(keys: object) -> None:
    with pytest.raises(ValueError, match=r"api_keys must be a mapping \{api_key: nca_id\}"):
        EmulatorConfig(api_keys=keys)  # type: ignore[arg-type]


def test_unknown_settings_suggest_the_close_name() -> None:
    with pytest.raises(TypeError, match=r"poll_secs \(did you mean poll_seconds\?\)"):
        EmulatorConfig().replace(poll_secs=5)
    with pytest.raises(TypeError, match=r"unknown emulator setting: max_asset_bites \(did"):
        EmulatorConfig.parse({"max_asset_bites": "8"})
    with pytest.raises(TypeError) as info:
        EmulatorConfig().replace(colour=1)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("name", ["root_dir", "state_dir"])
def test_fixed_place_advice_does_not_name_nvcf_settings(name: str) -> None:
    text = str(fixed_setting_error(name, None))
    assert "cannot change on a running emulator" in text
    assert "nvcf_settings" not in text
    assert f"@pytest.mark.nvcf({name}=...)" in text


def test_fixed_upload_setting_advice_names_the_ini() -> None:
    assert "nvcf_settings = bucket=..." in str(fixed_setting_error("bucket", "nvcf-assets"))


# -- the clock ----------------------------------------------------------------------------------


def test_clock_advance_takes_negative_timedeltas_and_numbers() -> None:
    clock = Clock()
    start = clock.now()
    assert clock.advance(timedelta(minutes=-1)) == pytest.approx(start - 60, abs=5)
    assert clock.advance(60) == pytest.approx(start, abs=5)


@pytest.mark.parametrize("bad", [True, None, "an hour"])
def test_clock_advance_refuses_what_is_no_duration(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="timedelta"):
        Clock().advance(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "when",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T02:00:00+02:00",
        "2026-01-01t00:00:00.000z",
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1),
        datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
        1767225600,
    ],
)
def test_clock_set_takes_every_form_of_the_same_instant(when: object) -> None:
    assert Clock().set(when) == pytest.approx(1767225600.0, abs=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["2026-01-01", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z"])
def test_clock_set_refuses_a_string_without_a_date_time_and_zone(bad: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|not a valid date-time"):
        Clock().set(bad)


def test_clock_repr_reads_the_time_when_shown() -> None:
    clock = Clock()
    clock.set("2030-06-01T00:00:00Z")
    assert "2030-06-01" in repr(clock)
    clock.advance(timedelta(days=1))
    assert "2030-06-02" in repr(clock)


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"status": "503"}, "status"),
        ({"status": 503.0}, "status"),
        ({"latency": "1"}, "latency"),
        ({"status": 503, "times": "2"}, "times"),
        ({"status": 503, "probability": "0.5"}, "probability"),
        ({"drop": "yes"}, "drop"),
    ],
)
def test_a_fault_setting_of_the_wrong_type_is_named(settings: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Faults().add("create", **settings)  # type: ignore[arg-type]


def test_iterating_faults_yields_the_rules() -> None:
    faults = Faults()
    fault = faults.add("create", status=503)
    assert [f.status for f in faults] == [503]
    assert list(faults) == [fault]
