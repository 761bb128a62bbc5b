// placeholder: copy
