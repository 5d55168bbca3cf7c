""".ci/cluster keeps to its own folder: a cluster started and stopped beside a contributor's own SLURM, munge and
PostgreSQL leaves them as they were. The system's config files are stood in for by sentinels mounted over
/etc/slurm and /etc/munge in a private mount namespace, so the test itself changes nothing on the machine."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import NO_CLUSTER, ROOT, cluster_env

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]


def _system_clusters() -> str:
    return subprocess.run(["pg_lsclusters"], capture_output=True, text=True).stdout


def test_the_cluster_leaves_other_daemons_config_files_and_databases_alone(tmp_path: Path) -> None:
    cluster_env("SLURM")  # opted in (bash .ci/run --cluster, or CI): starting daemons is for those runs only
    if os.geteuid() != 0 or not shutil.which("unshare") or not Path("/etc/slurm").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI runs as root with SLURM installed: this test must run there")
        pytest.skip(f"needs root and SLURM installed: {NO_CLUSTER}")
    sentinels = {}
    for folder, name in (("slurm", "slurm.conf"), ("munge", "munge.key")):
        (tmp_path / folder).mkdir()
        sentinels[tmp_path / folder / name] = f"a contributor's own {name}\n"
    for path, text in sentinels.items():
        path.write_text(text)
    decoy = tmp_path / "munged"  # a process named munged, as a contributor's own munge daemon is
    shutil.copy("/bin/sleep", decoy)
    process = subprocess.Popen([decoy, "600"])
    clusters = _system_clusters()
    home = Path(tempfile.mkdtemp(prefix="mnist-lite-cluster-"))  # pytest's own folders are closed to nobody
    home.chmod(0o711)
    state = home / "state"
    script = (
        f"mount --bind {tmp_path / 'slurm'} /etc/slurm && mount --bind {tmp_path / 'munge'} /etc/munge"
        f" && {ROOT}/.ci/cluster start {state} && SLURM_CONF={state}/slurm.conf srun -n1 true"
        f" && {ROOT}/.ci/cluster stop {state}"
    )
    try:
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "cluster up in" in result.stdout
        assert process.poll() is None, "the decoy munged was stopped"
        assert {path: path.read_text() for path in sentinels} == sentinels
        assert _system_clusters() == clusters
        assert not state.exists()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(home)


def test_a_second_cluster_in_the_same_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    result = subprocess.run(
        [ROOT / ".ci" / "cluster", "start", tmp_path / "state"], capture_output=True, text=True, timeout=30
    )
    if os.geteuid() != 0:
        assert "need root" in result.stderr
    else:
        assert result.stderr.strip().endswith("or choose another"), result.stderr
        assert (tmp_path / "state").is_dir()  # the other cluster's folder is not removed
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
