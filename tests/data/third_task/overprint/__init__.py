"""A throwaway layer task (tests/test_third_task.py): two inks overprinted on white paper.
Composite = layer 1 x layer 2 (a multiply blend); layers: a disc's ink, a box's ink."""
