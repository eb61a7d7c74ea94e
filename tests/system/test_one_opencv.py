"""One OpenCV in the environment: opencv-python-headless (splitinfer's), not also opencv-python (the Qt build
nncodec declares). Both wheels install the same `cv2` package, so with both the last installed wins and
uninstalling either breaks the other; scripts/setup.sh removes the GUI build after installing."""

from importlib.metadata import PackageNotFoundError, version


def _installed(name: str) -> bool:
    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def test_only_the_headless_opencv_is_installed():
    import cv2

    assert _installed("opencv-python-headless")
    assert not _installed("opencv-python"), "opencv-python (GUI) installed beside -headless: rerun scripts/setup.sh"
    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
    assert gui and gui[0].split(":", 1)[1].strip() == "NONE", gui
