"""The datasets a data config can name with `_target_` (conf/data/): each module holds one loader returning a
src.training.data.DeviceData, its INFO (sizes and shapes) and the KEY_RULES of its keys. A dataset module may import
src.training.data, src.config.rules and src.runs."""
