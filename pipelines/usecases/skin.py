"""Skin lesion classification: HAM10000 dermatoscopic images, 7 diagnoses, as DermaMNIST
(28x28 RGB, official MedMNIST split) or the full HAM10000 release (lesion-grouped split) at
the resolution `data.image_size` sets.

Full resolution with the pretrained backbone is a `--set` away (the README's skin section):
`data.image_size=192 model.builder=transfer model.image_size=192 ...` on the HAM10000 JPEGs;
the exported model, its card and `predict` then take 192x192x3 images."""

from pipelines.core.spec import DataConfig, ModelConfig, Spec, TrainConfig

SPEC = Spec(
    name="skin",
    title="Skin lesion classification (HAM10000 / DermaMNIST)",
    task="image_classification",
    input_shape=(28, 28, 3),  # follows data.image_size (pipelines.tasks.image_classification.sized)
    class_names=("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
    description=(
        "Classifies a dermatoscopic image of a pigmented skin lesion into 7 diagnoses: actinic keratosis/"
        "intraepithelial carcinoma (akiec), basal cell carcinoma (bcc), benign keratosis (bkl), dermatofibroma (df), "
        "melanoma (mel), melanocytic nevus (nv), vascular lesion (vasc)."
    ),
    data=DataConfig(
        loader="medmnist_format",
        # No checksummed canonical download is known here: pass --data-dir with dermamnist.npz
        # (MedMNIST) or the HAM10000 release, or put it in data/raw/skin/.
        options={"val_fraction": 0.1, "test_fraction": 0.2},  # HAM10000 lesion-grouped split only
        # DermaMNIST's 28x28. HAM10000's JPEGs (600x450) are resized to any size, cached per
        # size; other sizes of DermaMNIST need MedMNIST+'s dermamnist_<size>.npz (64, 128, 224).
        image_size=28,
    ),
    model=ModelConfig(
        # Chosen on full DermaMNIST over small_cnn (balanced accuracy and AUC): the figures are in
        # benchmarks/RESULTS.md (`make bench-skin`). On these 28x28 images it also ranks better
        # than the ImageNet MobileNet `transfer` builder (upsampled to 128 px; macro AUC, balanced
        # accuracy), same run (`make bench-skin-transfer`): the backbone is for HAM10000 JPEGs.
        builder="residual_cnn",
        # Dermatoscopic images have no up or left: flips and rotations are label-preserving.
        augmentation=("flip", "rotate:0.1", "zoom:0.1", "contrast:0.1"),
        # ... so the served answer is the mean over all 8 symmetries of the square.
        test_time_augmentation=("flip_horizontal", "flip_vertical", "transpose"),
    ),
    # Unweighted: the loss learns the posterior of the population the data came from, and the
    # minority diagnoses are served by the `balanced` operating point of the same model (logit
    # adjustment, pipelines/evaluation/operating_points.py), not by re-weighting the loss, which trades one
    # metric for the other at training time. `make bench-skin` measures both side by side.
    train=TrainConfig(epochs=60, batch_size=64, learning_rate=2e-3, class_weights=0.0),
    # Missing a melanoma costs more than misfiling a nevus: predict and serve answer at the
    # balanced point unless told `--operating-point accuracy`.
    operating_point="balanced",
    priority_classes=("mel",),
    primary_metric="val_accuracy",
    # Rank by what the served rule is tuned for: balanced accuracy at the balanced point.
    ranking_metric="test_balanced_point_balanced_accuracy",
    intended_use="Research and teaching on dermatoscopic image classification. NOT A MEDICAL DEVICE.",
    limitations=(
        "Not a medical device and not for diagnosis: a clinician must make every clinical decision. "
        "At DermaMNIST's 28x28 (data.image_size) most dermatoscopic detail is lost; HAM10000 comes from two sites (Vienna, Queensland) and mostly "
        "light skin, so other populations, cameras and non-dermatoscopic photos are out of distribution. "
        "About 67% of images are nevi: read balanced accuracy and per-class recall (melanoma!), not accuracy alone."
    ),
)
