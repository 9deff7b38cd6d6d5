"""tf_facetex: re-renderable facial albedo, per-texel SH illumination and 3D face from one photo."""
from setuptools import find_packages, setup

# The pinned, tested set lives in requirements.txt (scripts/setup_env.sh installs it). The ranges
# here are what the code needs; tensorflow-graphics is installed separately with --no-deps because
# its metadata requires tensorflow-addons, which this project must not depend on.
setup(
    name="tf_facetex",
    version="0.1.0",
    description="Self-supervised reconstruction of re-renderable facial textures (TensorFlow/Keras)",
    packages=find_packages(include=["tf_facetex", "tf_facetex.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "numpy>=1.26",
        "scipy>=1.11",
        "absl-py>=2.0",
        "opencv-python-headless>=4.8",
        "pillow>=10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-image>=0.22",
        "trimesh>=4",
        "dlib-bin>=19.24",
        "face_recognition_models>=0.3",
        "psutil>=5",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2"]},
    include_package_data=True,
    package_data={"tf_facetex.viewer": ["facetex_viewer.js", "LICENSE.three.txt", "src/viewer.mjs"]},
)
