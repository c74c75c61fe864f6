"""Speech-command classifier: a 1-D CNN over log-mel frames (the articles' Conv1D, 100 steps x 40 features)."""

from dlbench import Dataset, Plugin

_SYNTHETIC_SOURCE = ("ten two- or three-phone 'words' (source-filter vowels with formants, a glide, a "
                     "hiss) by random synthetic speakers (pitch, vocal-tract length, rate, timing) in noise, rendered "
                     "to 8 kHz waveforms with a fixed seed and put through the same log-mel pipeline as recordings; "
                     "generated because no real speech ships offline with dlbench's dependencies "
                     "(scipy.datasets downloads its files on first use)")
_FSDD_SOURCE = ("Free Spoken Digit Dataset v1.0.10 (Z. Jackson et al.), "
                "github.com/Jakobovski/free-spoken-digit-dataset; CC BY-SA 4.0; 3,000 8 kHz recordings of the digits "
                "by 6 speakers, standard split: takes 0-4 = test; downloaded on first use or read from --data.root")

PLUGIN = Plugin(
    name="audio",
    summary="Conv1D speech-command classifier over log-mel frames (vs. the majority class)",
    model="dlbench_plugins.audio.model:SpeechCommandCNN",
    datamodule="dlbench_plugins.audio.data:SyntheticSpeechDataModule",
    data_kind="audio",
    data_name="synthetic_speech",
    data_source=_SYNTHETIC_SOURCE,
    generated_data=True,
    monitor="val/acc",
    mode="max",
    trainer_defaults={"max_epochs": 20},
    tiny_args=("--model.channels", "8", "--model.num_layers", "2", "--data.num_train", "64", "--data.num_val", "32",
               "--data.num_test", "32"),
    learn_args=("--trainer.max_epochs", "4", "--data.num_train", "400", "--data.num_val", "100",
                "--data.num_test", "200", "--model.channels", "32"),
    score="test/acc",
    baseline="test/acc_majority",
    baseline_label="majority class",
)

SYNTHETIC_SPEECH = Dataset(
    name="synthetic_speech",
    summary="ten generated spoken 'words' at 8 kHz, random synthetic speakers in noise (generated)",
    datamodule="dlbench_plugins.audio.data:SyntheticSpeechDataModule",
    data_kind="audio",
    source=_SYNTHETIC_SOURCE,
    generated=True,
)

FSDD = Dataset(
    name="fsdd",
    summary="Free Spoken Digit Dataset: 3,000 recordings of the digits 0-9 by 6 speakers, 8 kHz",
    datamodule="dlbench_plugins.audio.data:FsddDataModule",
    data_kind="audio",
    source=_FSDD_SOURCE,
)
