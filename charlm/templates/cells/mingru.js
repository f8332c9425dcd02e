// minGRU (charlm.cells.MinGRU.step, MinCell.coefficients), columns [k_h | k_z] of xW; no hW:
//   z = sigmoid(k_z)   h = (1 - z) h + z g(k_h)   g(k) = k + 1/2 for k >= 0, else sigmoid(k)
// computed as the Python does: h = a h + b, a = sigmoid(-k_z), b = sigmoid(k_z) g(k_h)
(xW, hW, h, c) => {
  const S = h.length;
  for (let j = 0; j < S; j++) {
    const k = xW[j], s = xW[S + j];
    h[j] = sigmoid(-s) * h[j] + sigmoid(s) * (k >= 0 ? k + 0.5 : sigmoid(k));
  }
}
