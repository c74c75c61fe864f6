"""Single-stage YOLO-style detector: a grid of cells predicting objectness, boxes and classes, with NMS and COCO mAP."""

from dlbench import Dataset, Plugin

_SHAPES_SOURCE = ("64x64 images of coloured circles, squares and triangles (1-4 each, 15-40% of the side, never "
                  "overlapping) on noisy gradient backgrounds, with their exact boxes and classes, generated in memory "
                  "with a fixed seed; generated because no real detection data ships offline with dlbench's "
                  "dependencies")

PLUGIN = Plugin(
    name="detector",
    summary="single-stage YOLO-style detector: conv backbone -> grid of objectness/box/class cells -> NMS (COCO mAP)",
    model="dlbench_plugins.detector.model:GridDetector",
    datamodule="dlbench_plugins.detector.data:ShapesDataModule",
    data_kind="detection",
    data_name="shapes",
    data_source=_SHAPES_SOURCE,
    generated_data=True,
    monitor="val/map50",
    mode="max",
    trainer_defaults={"max_epochs": 8},
    tiny_args=("--model.width", "8", "--model.stages", "2", "--data.num_train", "64", "--data.num_val", "16",
               "--data.num_test", "16"),
    learn_args=("--trainer.max_epochs", "3", "--data.num_train", "600", "--data.num_val", "100",
                "--data.num_test", "100", "--data.batch_size", "16"),
    score="test/map50",
    baseline="test/map50_prior",
    baseline_label="each class's mean training box",
)

SHAPES = Dataset(
    name="shapes",
    summary="generated images of coloured circles, squares and triangles with exact boxes (generated)",
    datamodule="dlbench_plugins.detector.data:ShapesDataModule",
    data_kind="detection",
    source=_SHAPES_SOURCE,
    generated=True,
)

COCO = Dataset(
    name="coco",
    summary="any COCO-format detection set: an annotation JSON and its image folder (--data.annotations PATH)",
    datamodule="dlbench_plugins.detector.coco:CocoDataModule",
    data_kind="detection",
    source="your own files in the COCO format (instances JSON + images); e.g. COCO 2017 (CC BY 4.0, cocodataset.org) "
           "for small subsets: every image is decoded and held in memory",
)
