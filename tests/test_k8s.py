"""packaging/kubernetes/: the fields that make pyoomd work on every node, a
ConfigMap the daemon accepts (carrying the repository's policy files
verbatim), a NetworkPolicy that admits only Prometheus to the metrics port,
and every manifest valid against the schemas of the Kubernetes versions the
README names (kubernetes-validate, strict: unknown fields are errors)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # the test extra (pyproject.toml)
import pytest
import yaml

from pyoomd.policy.load import check_text
from pyoomd.settings.load import settings_from_text

ROOT = Path(__file__).resolve().parent.parent
KDIR = ROOT / "packaging" / "kubernetes"
MANIFESTS = sorted(KDIR.glob("*.yaml"))


def readme_versions() -> list[str]:
    """"Kubernetes 1.33 to 1.37" in the README's "Install on Kubernetes"."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"Kubernetes (1)\.(\d+) to 1\.(\d+)", text)
    assert m, "the README names no range of Kubernetes versions (\"Kubernetes 1.N to 1.M\")"
    return [f"1.{minor}.0" for minor in range(int(m.group(2)), int(m.group(3)) + 1)]


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in MANIFESTS:
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                assert d["kind"] not in out, f"{f.name}: a second {d['kind']}"
                out[d["kind"]] = d
    assert set(out) == {"ConfigMap", "DaemonSet", "NetworkPolicy"}
    return out


@pytest.mark.parametrize("version", readme_versions())
def test_manifests_validate_against_kubernetes_schemas(version: str) -> None:
    for f in MANIFESTS:
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{f.name}: {d['kind']} invalid for Kubernetes {version}: "
                                f"{'.'.join(map(str, e.path))}: {e.message}")


def test_configmap_carries_the_repository_policies_verbatim(docs: dict[str, dict[str, Any]]) -> None:
    data = docs["ConfigMap"]["data"]
    for name in ("default.yaml", "kubernetes.yaml"):
        assert data[name] == (ROOT / "policies" / name).read_text(), (
            f"packaging/kubernetes/configmap.yaml's {name} differs from policies/{name}: copy it again")
        res = check_text(f"configmap:{name}", data[name])
        assert not res.errors and not res.refused and not res.warnings, res
    # and every policy key is mounted into the policy directory the config names
    items = {i["key"]: i["path"] for v in pod(docs)["volumes"] if "configMap" in v for i in v["configMap"]["items"]}
    mount = next(m["mountPath"] for m in container(docs)["volumeMounts"] if m["name"] == "config")
    (policy_dir,) = configmap_settings(docs).policy_dirs
    for key in data:
        assert key in items, f"ConfigMap key {key} is not mounted"
        if key != "config.yaml":
            assert f"{mount}/{items[key]}" == f"{policy_dir}/{key}"


def test_networkpolicy_admits_only_prometheus_to_the_metrics_port(docs: dict[str, dict[str, Any]]) -> None:
    np_ = docs["NetworkPolicy"]
    ds = docs["DaemonSet"]
    assert np_["metadata"]["namespace"] == ds["metadata"]["namespace"]
    assert np_["spec"]["podSelector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert np_["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = np_["spec"]["ingress"]
    (port,) = rule["ports"]
    named = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert port["protocol"] == "TCP" and port["port"] in named
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
    assert not pod(docs).get("hostNetwork"), "a NetworkPolicy does not apply to a pod on the host network"


def test_liveness_asks_the_configured_status_socket(docs: dict[str, dict[str, Any]]) -> None:
    cmd = container(docs)["livenessProbe"]["exec"]["command"]
    assert cmd[:2] == ["pyoomd", "status"]
    assert cmd[cmd.index("--socket") + 1] == configmap_settings(docs).status.socket


def test_node_cgroup_tree_mounted_for_cgroup_kill(docs: dict[str, dict[str, Any]]) -> None:
    vols = {v["name"]: v for v in pod(docs)["volumes"]}
    (m,) = [m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/sys/fs/cgroup"]
    assert vols[m["name"]]["hostPath"]["path"] == "/sys/fs/cgroup" and not m.get("readOnly")


def pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = docs["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = pod(docs)["containers"]
    return c  # type: ignore[no-any-return]


def test_kinds_and_selector(docs: dict[str, dict[str, Any]]) -> None:
    ds = docs["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["ConfigMap"]["metadata"]["namespace"] == ds["metadata"]["namespace"] == "kube-system"


def test_node_wide_and_critical(docs: dict[str, dict[str, Any]]) -> None:
    p = pod(docs)
    assert p["hostPID"] is True
    assert p["priorityClassName"] == "system-node-critical"
    # one toleration that matches every taint
    assert {"operator": "Exists"} in p["tolerations"]
    assert "nodeSelector" not in p and "affinity" not in p


def test_capabilities_not_privileged(docs: dict[str, dict[str, Any]]) -> None:
    sc = container(docs)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"KILL", "IPC_LOCK", "SYS_PTRACE", "SYS_RESOURCE"}
    assert sc["runAsUser"] == 0


def test_resources_bounded(docs: dict[str, dict[str, Any]]) -> None:
    res = container(docs)["resources"]
    assert res["limits"]["memory"] == res["requests"]["memory"]  # mlockall: all of it resident
    assert "cpu" in res["requests"] and "cpu" not in res["limits"]


def test_metrics_port_annotated(docs: dict[str, dict[str, Any]]) -> None:
    ann = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    port = int(ann["prometheus.io/port"])
    assert port == 9101
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container(docs)["ports"]
    settings = configmap_settings(docs)
    assert settings.metrics.listen is not None and settings.metrics.listen.endswith(f":{port}")


def configmap_settings(docs: dict[str, dict[str, Any]]) -> Any:
    return settings_from_text("configmap:config.yaml", docs["ConfigMap"]["data"]["config.yaml"])


def test_config_from_configmap(docs: dict[str, dict[str, Any]]) -> None:
    c = container(docs)
    args = c["args"]
    cfg_path = args[args.index("--config") + 1]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod(docs)["volumes"]}
    cm_vol = next(name for name, v in vols.items() if "configMap" in v)
    assert vols[cm_vol]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert mounts[cm_vol]["readOnly"] is True
    item_paths = {mounts[cm_vol]["mountPath"] + "/" + i["path"] for i in vols[cm_vol]["configMap"]["items"]}
    assert cfg_path in item_paths
    # the daemon accepts it
    settings = configmap_settings(docs)
    assert settings.log_format == "json" and settings.dry_run is False
    # the status socket's directory is a writable volume
    sock_dir = str(Path(settings.status.socket).parent)
    assert any(m["mountPath"] == sock_dir and not m.get("readOnly") for m in c["volumeMounts"])
    assert args[0] == "run" and "--dry-run" not in args
