"""docker-compose.accounts.yml: the opt-in override for several accounts, valid per the Compose
Specification schema on its own and merged over docker-compose.yml, and the README's example
with it starts every role.

Like tests/deploy/test_compose.py, no Docker engine: the merge is Compose's for the keys the
override sets (checked below), the containers' files are written below a temporary root.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import ROOT
from tests.deploy.test_compose import (
    BRIDGE_SERVICES,
    compose_validator,
    env_list_to_dict,
    interpolated,
    load_compose,
    variables_in,
)

OVERRIDE = ROOT / "docker-compose.accounts.yml"
SIGNING_IN = ("worker", "poller")
SECRETS_DIR = "/run/secrets"


def override() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OVERRIDE.read_text(encoding="utf-8"))
    return loaded


def merge(base: Any, over: Any) -> Any:
    """Compose's merge for what the override sets: mappings key by key (environment too),
    sequences (volumes, secrets) appended, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base[k], v) if k in base else v for k, v in over.items()}}
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def merged() -> dict[str, Any]:
    """docker-compose.yml interpolated with .env.example, then the override over it."""
    result: dict[str, Any] = merge(interpolated(), override())
    return result


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = compose_validator()
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


# ---------------------------------------------------------------------------------------------
# schema and merge
# ---------------------------------------------------------------------------------------------


def test_override_matches_the_compose_spec_schema() -> None:
    assert not schema_errors(override())


def test_merged_project_matches_the_compose_spec_schema() -> None:
    assert not schema_errors(merged())


def test_override_sets_only_what_the_merge_here_knows() -> None:
    doc = override()
    assert set(doc) - {k for k in doc if k.startswith("x-")} == {"services", "secrets"}
    assert set(doc["services"]) == set(BRIDGE_SERVICES)
    base = load_compose()["services"]
    for name, service in doc["services"].items():
        assert set(service) <= {"environment", "volumes", "secrets"}, name
        # Appending equals Compose's merge by target only while the base has none of these.
        assert not {"volumes", "secrets"} & set(base[name]), name
        assert isinstance(service["environment"], dict), name


def test_override_interpolates_nothing() -> None:
    # Nothing to add to .env.example, nothing that could stop `docker compose` when unset.
    assert variables_in(OVERRIDE.read_text(encoding="utf-8")) == set()


def test_default_compose_file_is_still_single_account() -> None:
    for name in BRIDGE_SERVICES:
        service = interpolated()["services"][name]
        env = env_list_to_dict(service["environment"])
        assert env["BRIDGE_UCWA_USERNAME"] and env["BRIDGE_UCWA_PASSWORD"], name
        assert "BRIDGE_ACCOUNTS_FILE" not in env and "secrets" not in service, name
    assert "secrets" not in load_compose()


# ---------------------------------------------------------------------------------------------
# what the merged project gives each role
# ---------------------------------------------------------------------------------------------


def test_every_role_reads_the_accounts_file_mounted_read_only() -> None:
    services = merged()["services"]
    for name in BRIDGE_SERVICES:
        env = env_list_to_dict(services[name]["environment"])
        # The bridge refuses the single-account variables next to a list: emptied, i.e. unset.
        assert env["BRIDGE_UCWA_USERNAME"] == env["BRIDGE_UCWA_PASSWORD"] == "", name
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        volume = mounts[env["BRIDGE_ACCOUNTS_FILE"]]
        assert volume["type"] == "bind" and volume["read_only"] is True, name
        assert volume["bind"]["create_host_path"] is False, name
        assert volume["source"] == "./accounts/accounts.yaml"


def test_passwords_are_file_secrets_of_the_worker_and_poller_only() -> None:
    project = merged()
    declared = project["secrets"]
    # The services' root filesystems are read-only: Compose can only bind-mount file secrets.
    assert all(set(secret) == {"file"} for secret in declared.values()), declared
    for name in SIGNING_IN:
        assert project["services"][name]["read_only"] is True
        assert sorted(project["services"][name]["secrets"]) == sorted(declared), name
    assert "secrets" not in project["services"]["api"]


# ---------------------------------------------------------------------------------------------
# the README's "Several accounts" (With docker-compose), followed literally
# ---------------------------------------------------------------------------------------------


def readme_compose_accounts() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### With docker-compose") :]
    section = section[: section.index("\n### ", 1)]
    return section[section.index("#### Several accounts") :]


def readme_block(section: str, language: str) -> str:
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def readme_example() -> tuple[list[dict[str, Any]], dict[str, str], list[list[str]]]:
    """The README's accounts.yaml entries, the password files its commands write (path: the
    written text), and its commands."""
    section = readme_compose_accounts()
    entries = yaml.safe_load(readme_block(section, "yaml"))["accounts"]
    lines = readme_block(section, "sh").replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if line.strip()]
    written = {c[-1]: c[2] for c in commands if c[:2] == ["printf", "%s"] and c[-2] == ">"}
    return entries, written, commands


def test_readme_example_matches_the_override() -> None:
    entries, written, commands = readme_example()
    declared = override()["secrets"]
    # Each account's password_file is the secret the override mounts, from the file the README
    # writes; and the override mounts no secret the example does not use.
    files = {f"{SECRETS_DIR}/{name}": secret["file"] for name, secret in declared.items()}
    assert {e["password_file"] for e in entries} == set(files)
    assert {files[e["password_file"]].removeprefix("./") for e in entries} == set(written)
    run = next(c for c in commands if c[:2] == ["docker", "compose"])
    named = [run[i + 1] for i, word in enumerate(run) if word == "-f"]
    assert named == ["docker-compose.yml", OVERRIDE.name]
    assert all((ROOT / name).is_file() for name in named)
    # The file the README writes the list into is the one the override mounts.
    source = override()["services"]["api"]["volumes"][0]["source"].removeprefix("./")
    assert readme_block(readme_compose_accounts(), "yaml").startswith(f"# {source}\n")


def container_files(service: dict[str, Any], project: Path, root: Path) -> None:
    """Write what a service's container sees of the project's files (bind mounts, file
    secrets) below ``root``."""
    mounts = {v["source"]: v["target"] for v in service.get("volumes", [])}
    declared = merged()["secrets"]
    mounts |= {declared[s]["file"]: f"{SECRETS_DIR}/{s}" for s in service.get("secrets", [])}
    for source, target in mounts.items():
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text((project / source).read_text(encoding="utf-8"), encoding="utf-8")


def test_readme_example_starts_every_role(tmp_path: Path) -> None:
    from bridge.config.settings import Settings

    entries, written, _ = readme_example()
    project = tmp_path / "project"
    (project / "accounts").mkdir(parents=True)
    (project / "accounts" / "accounts.yaml").write_text(yaml.safe_dump({"accounts": entries}))
    for path, text in written.items():
        (project / path).write_text(text, encoding="utf-8")
    services = merged()["services"]
    loaded = {}
    for name in BRIDGE_SERVICES:
        root = tmp_path / name
        container_files(services[name], project, root)
        env = env_list_to_dict(services[name]["environment"])
        listing = root / env["BRIDGE_ACCOUNTS_FILE"].lstrip("/")
        accounts = yaml.safe_load(listing.read_text(encoding="utf-8"))
        for entry in accounts["accounts"]:  # the container's paths, below root here
            entry["password_file"] = str(root / entry["password_file"].lstrip("/"))
        listing.write_text(yaml.safe_dump(accounts), encoding="utf-8")
        env["BRIDGE_ACCOUNTS_FILE"] = str(listing)
        loaded[name] = Settings.from_env(name, env).accounts  # type: ignore[arg-type]
    ids = tuple(e["id"] for e in entries)
    for name in BRIDGE_SERVICES:
        assert loaded[name].ids == ids, name
    by_file = {f"{SECRETS_DIR}/{n}": s["file"] for n, s in merged()["secrets"].items()}
    for name in SIGNING_IN:
        passwords = {a.id: a.password for a in loaded[name]}
        assert passwords == {
            e["id"]: written[by_file[e["password_file"]].removeprefix("./")] for e in entries
        }
    # The api gets no password file and needs none.
    assert {a.password for a in loaded["api"]} == {""}
    assert not re.search(r"password:", readme_block(readme_compose_accounts(), "yaml"))
