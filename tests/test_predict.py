"""`predict` over image files: one call answers for every readable file and names the rest."""

import numpy as np
from PIL import Image
from test_images import write_png


def test_one_call_predicts_the_good_files_and_names_the_bad(tmp_path):
    """The whole corpus in one `predict` call, on a real (tiny) SavedModel: every convertible
    file is predicted, each refused one is one error line, and none stops the others."""
    import json

    from pipelines.core.runtime import import_keras
    from pipelines.serving.predict import predict_files

    keras = import_keras()
    inputs = keras.Input((28, 28), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(scaled))
    model.export(str(tmp_path / "model"), format="tf_saved_model", verbose=False)
    (tmp_path / "model" / "metadata.json").write_text(json.dumps({"input_shape": [28, 28], "class_names": list("0123456789")}))

    Image.new("L", (1, 1), 200).save(tmp_path / "dot.png")
    write_png(tmp_path / "grey16.png", np.full((28, 28), 40000, np.uint16), color_type=0)
    Image.new("CMYK", (30, 30), (0, 0, 0, 255)).save(tmp_path / "print.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    write_png(tmp_path / "bomb.png", None, color_type=0, bit_depth=1, size=(20_000, 20_000), idat=b"")
    names = [str(tmp_path / n) for n in ("dot.png", "broken.png", "grey16.png", "bomb.png", "print.jpg", "absent.png")]
    predictions = predict_files(tmp_path / "model", names)
    assert [p.path for p in predictions] == names
    assert [p.error is None for p in predictions] == [True, False, True, False, True, False]
    assert all(p.label in "0123456789" and 0 < p.probability <= 1 for p in predictions if p.error is None)
    assert "broken.png: not a readable image" in predictions[1].error and "refused before decoding" in predictions[3].error
