// The min cells' residual blocks (charlm.cells.MinCell's hooks), with
// norm(x, gain) = x / sqrt(mean(x^2) + EPS) gain (charlm.cells.rms_norm):
//   x_0 = input W_in + b_in                  layer l reads norm(x_l, gain_1)
//   x = x_l + h_l W_o + b_o                  x_{l+1} = x + gelu(norm(x, gain_2) W_1 + b_1) W_2 + b_2
//   the output layer reads norm(x_L, gain)
// gelu is F.gelu's exact form, x (1 + erf(x / sqrt(2))) / 2, with erf from Numerical Recipes'
// Chebyshev fit of erfc (3rd ed., section 6.2.2), good to double precision.
(W, { H, matvec, inputAffine }) => {
  const EPS = 1e-6;  // charlm.cells.EPS
  const COF = [-1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2,
    -9.561514786808631e-3, -9.46595344482036e-4, 3.66839497852761e-4, 4.2523324806907e-5,
    -2.0278578112534e-5, -1.624290004647e-6, 1.303655835580e-6, 1.5626441722e-8,
    -8.5238095915e-8, 6.529054439e-9, 5.059343495e-9, -9.91364156e-10, -2.27365122e-10,
    9.6467911e-11, 2.394038e-12, -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13,
    3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17];
  const erfc = (z) => {  // z >= 0
    const t = 2 / (2 + z), ty = 4 * t - 2;
    let d = 0, dd = 0;
    for (let j = COF.length - 1; j > 0; j--) { const tmp = d; d = ty * d - dd + COF[j]; dd = tmp; }
    return t * Math.exp(-z * z + 0.5 * (COF[0] + ty * d) - dd);
  };
  const erf = (x) => (x >= 0 ? 1 - erfc(x) : erfc(-x) - 1);
  const gelu = (x) => 0.5 * x * (1 + erf(x * Math.SQRT1_2));
  const block = (l, name) => W["layers." + l + "." + name];
  const F = block(0, "b_1").length;
  const u = new Float32Array(H), o = new Float32Array(H), f = new Float32Array(F);
  const norm = (x, gain) => {
    let sum = 0;
    for (let j = 0; j < H; j++) sum += x[j] * x[j];
    const scale = 1 / Math.sqrt(sum / H + EPS);
    for (let j = 0; j < H; j++) u[j] = x[j] * scale * gain[j];
    return u;
  };
  return {
    streamIn: (v, x) => inputAffine(W.W_in, W.b_in, v, x, H),
    layerInput: (l, x) => norm(x, block(l, "gain_1")),
    between(l, x, h) {
      matvec(block(l, "W_o"), h, block(l, "b_o"), o, H, h.length);
      for (let j = 0; j < H; j++) x[j] += o[j];
      matvec(block(l, "W_1"), norm(x, block(l, "gain_2")), block(l, "b_1"), f, F, H);
      for (let k = 0; k < F; k++) f[k] = gelu(f[k]);
      matvec(block(l, "W_2"), f, block(l, "b_2"), o, H, F);
      for (let j = 0; j < H; j++) x[j] += o[j];
      return x;
    },
    streamOut: (x) => norm(x, W.gain),
  };
}
