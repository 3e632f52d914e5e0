(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));
    document.body.setAttribute('data-js-errors',errors.join(' | '));});
  var DATA=JSON.parse(document.getElementById('avafn-data').textContent), WEAK=__WEAK__;
  var tip=document.createElement('div');tip.className='tip';tip.hidden=true;
  function pct(x){return (100*x).toFixed(x<0.1?1:0)+'%';}
  function short(s,n){s=s||'';return s.length>n?s.slice(0,n-1)+'\u2026':s;}
  function who(D,t){var r=D.rows[t];
    return '#'+(t+1)+' '+short(r.speaker,40)+' ('+r.label+')'+(r.text?': \u201c'+short(r.text,90)+'\u201d':'');}
  function initSection(sec){
    var k=+sec.dataset.dialogue, D=DATA.dialogues[k], H=D.heat;
    var rows=sec.querySelectorAll('tr.utt');
    var bars=sec.querySelectorAll('.tl-bar');
    var svg=sec.querySelector('svg.attention');
    var hl=svg.querySelector('rect.attn-highlight');
    var left=+svg.dataset.left, top=+svg.dataset.top, cell=+svg.dataset.cell;
    var info=sec.querySelector('.attn-info');
    function select(t){
      rows.forEach(function(r){r.classList.toggle('sel',r.dataset.turn===String(t));});
      bars.forEach(function(b){b.classList.toggle('sel',b.dataset.turn===String(t));});
      var i=Math.floor(t/H.block);
      hl.setAttribute('y',String(top+i*cell));hl.setAttribute('visibility','visible');
      var d=D.rows[t];
      var best=d.top.map(function(p){
        return '#'+(p[0]+1)+' '+short(D.rows[p[0]].speaker,30)+' ('+pct(p[1])+')';});
      info.textContent='Utterance '+(t+1)+' ('+short(d.speaker,30)+', '+d.label+'): '+
        (best.length?'looked back most at '+best.join(', '):'first utterance, nothing earlier to look back at');
    }
    rows.forEach(function(r){r.addEventListener('click',function(e){
      if(e.target.closest('details'))return; select(+r.dataset.turn);});
      r.addEventListener('keydown',function(e){
        if(e.key==='Enter'&&e.target===r){e.preventDefault();select(+r.dataset.turn);}});});
    var tlInfo=sec.querySelector('.tl-info');
    function fit(){bars.forEach(function(b){var w=b.clientWidth-4;
      b.classList.remove('tight','tighter');
      if(b.firstChild.offsetWidth>w){b.classList.add('tight');
        if(b.lastChild.offsetWidth>w)b.classList.add('tighter');}});}
    var tl=sec.querySelector('.timeline'), sc=sec.querySelector('.tl-scroll');
    function fitAll(){fit();tl.classList.toggle('scrolls',sc.scrollWidth>sc.clientWidth+1);}
    fitAll(); window.addEventListener('resize',fitAll);
    bars.forEach(function(b){b.addEventListener('click',function(e){
      e.preventDefault();
      var t=+b.dataset.turn, d=D.rows[t]; select(t);
      var f1=DATA.f1[d.label];
      tlInfo.textContent='#'+(t+1)+' '+short(d.speaker,40)+(d.guess?' (guessed from the audio)':'')+
        ', '+d.when+': '+d.label+' '+pct(d.conf)+
        (f1!=null?' (dev F1 '+Math.round(f1)+(f1<WEAK?', weak':'')+')':'')+
        (d.text?' \u2014 \u201c'+short(d.text,160)+'\u201d':'');
      var row=sec.querySelector('tr.utt[data-turn="'+t+'"]');
      if(row&&row.style.display!=='none'){row.scrollIntoView({block:'nearest'});
        row.focus({preventScroll:true});}});});
    function cellAt(ev){
      var m=svg.getScreenCTM(); if(!m)return null;
      var p=svg.createSVGPoint(); p.x=ev.clientX; p.y=ev.clientY; p=p.matrixTransform(m.inverse());
      var j=Math.floor((p.x-left)/cell), i=Math.floor((p.y-top)/cell);
      if(i<0||j<0||i>=H.n||j>i||!H.even[i][j])return null;
      return [i,j];
    }
    function show(ev){
      var c=cellAt(ev); if(!c){tip.hidden=true;return;}
      var i=c[0], j=c[1], b=H.block, s=H.share[i][j], e=H.even[i][j], txt;
      var even=' (an even share would be '+pct(e)+')';
      if(b===1){
        txt='Classifying '+who(D,i)+'\nlooked back at '+who(D,j)+'\nweight '+pct(s)+even;
      }else{
        var n=D.rows.length, a0=i*b+1, a1=Math.min(n,(i+1)*b), b0=j*b+1, b1=Math.min(n,(j+1)*b);
        txt='Utterances '+a0+'\u2013'+a1+' looked back at utterances '+b0+'\u2013'+b1+
          '\naverage weight '+pct(s)+even+'\nfirst of the rows: '+who(D,a0-1)+
          '\nfirst of the columns: '+who(D,b0-1);
      }
      tip.textContent=txt; tip.hidden=false;
      var x=ev.clientX+14, y=ev.clientY+14, w=tip.offsetWidth, h=tip.offsetHeight;
      if(x+w>window.innerWidth-4)x=Math.max(4,ev.clientX-w-10);
      if(y+h>window.innerHeight-4)y=Math.max(4,ev.clientY-h-10);
      tip.style.left=x+'px'; tip.style.top=y+'px';
    }
    svg.addEventListener('mousemove',show);
    svg.addEventListener('click',function(ev){show(ev);var c=cellAt(ev);
      if(c&&H.block===1){select(c[0]);}});
    svg.addEventListener('mouseleave',function(){tip.hidden=true;});
    document.addEventListener('click',function(ev){if(!svg.contains(ev.target))tip.hidden=true;});
    var ex=sec.querySelector('button.expand-all');
    ex.addEventListener('click',function(){
      var open=ex.getAttribute('aria-pressed')!=='true';
      sec.querySelectorAll('details.probs').forEach(function(d){d.open=open;});
      ex.setAttribute('aria-pressed',String(open));
      ex.textContent=open?'hide the probabilities':'show all probabilities';});
    var f=sec.querySelector('select.speaker-filter');
    f.addEventListener('change',function(){
      rows.forEach(function(r){
        r.style.display=(!f.value||r.dataset.speaker===f.value)?'':'none';});
    });
    return rows.length;
  }
  function init(){
    document.body.appendChild(tip);
    var n=0;
    document.querySelectorAll('section.dialogue').forEach(function(sec){n+=initSection(sec);});
    document.body.setAttribute('data-rendered',String(n));
    document.getElementById('js-status').textContent=
      'Interactive: click a timeline bar or a row, hover the heat map ('+n+' utterances).';
  }
  if(document.readyState==='loading'){document.addEventListener('DOMContentLoaded',init);}
  else{init();}
})();
