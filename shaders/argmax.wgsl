// placeholder: argmax
