// placeholder: swiglu
