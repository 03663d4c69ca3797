"""The sync model's input and output dimensions, without torch.

Feature extraction and the onnxruntime backend need these numbers; importing them from
:mod:`monitor.sync.model` would load torch (seconds of start-up) on machines that never
run the torch module.
"""

from __future__ import annotations

MEL_ROWS_PER_STEP = 4  # 100 Hz log-mel rows per 25 fps step
N_MELS = 80
CROP_HEIGHT, CROP_WIDTH = 48, 96
LIP_FEATURES = 83  # 40 lip landmarks (x, y), aperture, mouth width, face present
MAX_LAG = 15  # steps of 40 ms each way: the audio carries this much context per side
DISTANCE_SCALE = 5.0  # unit embeddings times this: distances in [0, 10]
