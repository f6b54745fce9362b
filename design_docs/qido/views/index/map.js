function (doc) {
  // Look-up index for QIDO-RS filters, keyed [tag, value, study]; with _count and group_level 3
  // a key or range of keys gives the matching studies without reading documents.
  // Person names are indexed upper-cased (PN matching is case-insensitive), whole and by
  // component, for every representation; legacy documents may hold PN values as plain strings.
  var d = doc.dataset;
  if (!d || typeof d !== 'object') { return; }
  function values(tag) {
    var e = d[tag];
    return (e && e.Value && e.Value.length) ? e.Value : [];
  }
  var study = values('0020000D')[0];
  if (typeof study !== 'string' || !study) { return; }
  var EXACT = ['00080020', '00080050', '00080060', '00100020', '00200010'];
  for (var i = 0; i < EXACT.length; i++) {
    var vs = values(EXACT[i]);
    for (var j = 0; j < vs.length; j++) {
      if (typeof vs[j] === 'string' && vs[j]) { emit([EXACT[i], vs[j], study], null); }
    }
  }
  var PN = ['00100010', '00080090'];
  var REPS = ['Alphabetic', 'Ideographic', 'Phonetic'];
  for (var p = 0; p < PN.length; p++) {
    var names = values(PN[p]);
    for (var n = 0; n < names.length; n++) {
      var name = names[n];
      var groups = typeof name === 'string' ? [name] : [];
      if (name && typeof name === 'object') {
        for (var r = 0; r < REPS.length; r++) {
          if (typeof name[REPS[r]] === 'string') { groups.push(name[REPS[r]]); }
        }
      }
      for (var g = 0; g < groups.length; g++) {
        var whole = groups[g].toUpperCase();
        if (!whole) { continue; }
        emit([PN[p], whole, study], null);
        var parts = whole.split('^');
        for (var c = 0; c < parts.length; c++) {
          if (parts[c]) { emit([PN[p] + '^', parts[c], study], null); }
        }
      }
    }
  }
}
