// placeholder: add
